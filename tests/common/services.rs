//! Real servers for the tests that need them, started as this test binary's own processes
//! on loopback from Debian's packages (`tests/services/setup.sh` installs them, and is run
//! here when they are missing): one PostgreSQL per test binary, and a Redis per call.
//! They die with the test binary, even when it panics or is killed: they are spawned by
//! one thread that lives as long as the process, with `PR_SET_PDEATHSIG` (which fires
//! when the spawning *thread* ends, so never a test's own thread). Their temporary
//! directories are removed when the binary exits.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// A request to the spawning thread: the command, and where its child goes.
type Spawn = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Starts `command` from the thread that never ends, its child killed when this process
/// exits.
fn spawn(command: Command) -> Child {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Spawn>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Spawn>();
        std::thread::Builder::new()
            .name("test-services".into())
            .spawn(move || {
                // Lives until the process exits: the sender is in a static.
                for (mut command, reply) in incoming {
                    let parent = std::process::id() as libc::pid_t;
                    // SAFETY: only async-signal-safe calls between fork and exec.
                    unsafe {
                        command.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            // The parent may have died before the line above.
                            if libc::getppid() != parent {
                                libc::_exit(1);
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("the test services' thread starts");
        Mutex::new(requests)
    });
    let (reply, child) = mpsc::channel();
    spawner.lock().unwrap().send((command, reply)).unwrap();
    child.recv().unwrap().expect("a test server starts")
}

/// What is removed and killed when the test binary exits.
static AT_EXIT: Mutex<Vec<(Option<Child>, Option<PathBuf>)>> = Mutex::new(Vec::new());

extern "C" fn clean_up() {
    let Ok(mut list) = AT_EXIT.lock() else { return };
    for (child, dir) in list.drain(..) {
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn at_exit(child: Option<Child>, dir: Option<PathBuf>) {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: registers a plain function, run once by exit().
        unsafe { libc::atexit(clean_up) };
    });
    AT_EXIT.lock().unwrap().push((child, dir));
}

/// Installs the servers when `installed` says one is missing.
fn ensure_installed(what: &str, installed: impl Fn() -> bool) {
    if installed() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/services/setup.sh");
    let status = Command::new("bash").arg(&script).status().expect("bash runs");
    assert!(
        status.success() && installed(),
        "{what} is missing and {} could not install it",
        script.display()
    );
}

/// A loopback port free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory removed at exit.
fn temp_dir(prefix: &str) -> PathBuf {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap().keep();
    at_exit(None, Some(dir.clone()));
    dir
}

/// A Redis server of the calling test's own, on a loopback port, keeping nothing on disk.
/// Killed when dropped.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

/// A new Redis server (each call its own process, so a test can kill and restart it).
pub fn redis() -> RedisServer {
    let mut server = RedisServer {
        port: free_port(),
        child: None,
        dir: temp_dir("diglot-redis-"),
    };
    server.restart();
    server
}

impl RedisServer {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: it keeps nothing), once it answers.
    pub fn restart(&mut self) {
        self.kill();
        let binary = Path::new("/usr/bin/redis-server");
        ensure_installed("redis-server", || binary.exists());
        let mut command = Command::new(binary);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(spawn(command));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.answers() {
            assert!(Instant::now() < deadline, "redis-server did not start on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers PING.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
