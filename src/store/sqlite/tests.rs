//! Opening: the migrations are valid, and processes opening a new file at once all succeed;
//! steps that write wait for another connection's write instead of failing.

use super::*;

#[test]
fn migrations_are_valid() {
    assert!(migrations().validate().is_ok());
}

/// Where a child process of `processes_opening_a_new_file_at_once_all_succeed` opens
/// the store, and the file whose appearance starts them all at once.
const CHILD_DB: &str = "DIGLOT_TEST_CHILD_DB";
const CHILD_GO: &str = "DIGLOT_TEST_CHILD_GO";

/// POSIX locks are per process, so the race is between processes: this test binary is
/// run again, six times, each running only `child_opens_the_store`.
#[test]
fn processes_opening_a_new_file_at_once_all_succeed() {
    let dir = tempfile::Builder::new().prefix("diglot-race-").tempdir().unwrap();
    let path = dir.path().join("diglot.db");
    let go = dir.path().join("go");
    let children: Vec<_> = (0..6)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "store::sqlite::tests::child_opens_the_store",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DB, &path)
                .env(CHILD_GO, &go)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Every child is waiting for this file; they all open the new store together.
    std::fs::write(&go, "").unwrap();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "a process failed to open the new store:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(SqliteStore::open(&path).is_ok());
}

/// One child of `processes_opening_a_new_file_at_once_all_succeed` (run by it only).
#[test]
#[ignore = "run by processes_opening_a_new_file_at_once_all_succeed in its own process"]
fn child_opens_the_store() {
    let path = std::path::PathBuf::from(std::env::var_os(CHILD_DB).expect("run by the parent test"));
    let go = std::path::PathBuf::from(std::env::var_os(CHILD_GO).expect("run by the parent test"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !go.exists() {
        assert!(std::time::Instant::now() < deadline, "the parent never said go");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if let Err(e) = SqliteStore::open(&path) {
        panic!("{e}");
    }
}

/// Steps that read and then write, run while another connection writes the file (the CLI,
/// a second gateway), wait for it and succeed. Begun as a read, the transaction's snapshot
/// went stale when the other one committed, and SQLite refused the write at once.
#[tokio::test]
async fn steps_that_read_then_write_wait_for_another_writer() {
    use crate::store::sql::Step;
    let dir = tempfile::Builder::new().prefix("diglot-busy-").tempdir().unwrap();
    let path = dir.path().join("diglot.db");
    let store = SqliteStore::open(&path).unwrap();
    let other = Connection::open(&path).unwrap();
    other
        .execute_batch("BEGIN IMMEDIATE; INSERT INTO documents VALUES ('setting', 'a', '1', 0);")
        .unwrap();
    let (begun, started) = std::sync::mpsc::channel();
    let committer = std::thread::spawn(move || {
        started.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        other.execute_batch("COMMIT").unwrap();
    });
    let steps = vec![
        Step::Query("SELECT count(*) FROM documents".into(), vec![]),
        Step::Execute("INSERT INTO documents VALUES ('setting', 'b', '2', 0)".into(), vec![]),
    ];
    begun.send(()).unwrap();
    let ran = store.engine().run(steps).await;
    committer.join().unwrap();
    let outputs = ran.unwrap_or_else(|e| panic!("the steps failed: {e}"));
    assert_eq!(outputs.len(), 2);
}
