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
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Whom servers run as: initdb and postgres refuse root, so as root, `nobody`.
fn unprivileged() -> Option<(u32, u32)> {
    // SAFETY: plain libc calls; getpwnam's result is read at once.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let user = libc::getpwnam(c"nobody".as_ptr());
        assert!(
            !user.is_null(),
            "running as root, and there is no user nobody to run servers as"
        );
        Some(((*user).pw_uid, (*user).pw_gid))
    }
}

fn as_unprivileged(command: &mut Command, dir: &Path) {
    if let Some((uid, gid)) = unprivileged() {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
        command.uid(uid).gid(gid);
    }
}

/// A certificate authority of the test's own and a server certificate it signed for
/// `localhost` and `127.0.0.1`, as PEM files readable by the servers' user.
pub struct TestCertificates {
    /// The authority's certificate: what a client must be told to trust.
    pub authority: PathBuf,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// Makes a fresh authority and server certificate in `dir`.
pub fn certificates(dir: &Path) -> TestCertificates {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let authority_key = KeyPair::generate().unwrap();
    let mut authority = CertificateParams::new(Vec::<String>::new()).unwrap();
    authority.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    authority
        .distinguished_name
        .push(DnType::CommonName, "diglot test authority");
    let authority_pem = authority.self_signed(&authority_key).unwrap().pem();
    let issuer = Issuer::new(authority, authority_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let files = TestCertificates {
        authority: dir.join("authority.pem"),
        certificate: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.authority, authority_pem).unwrap();
    std::fs::write(&files.certificate, server.pem()).unwrap();
    std::fs::write(&files.key, server_key.serialize_pem()).unwrap();
    // PostgreSQL wants its key readable by its own user alone.
    std::fs::set_permissions(&files.key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    if let Some((uid, gid)) = unprivileged() {
        for file in [&files.authority, &files.certificate, &files.key] {
            std::os::unix::fs::chown(file, Some(uid), Some(gid)).unwrap();
        }
    }
    files
}

/// The newest installed PostgreSQL's programs.
fn postgres_bin() -> PathBuf {
    let newest = || {
        std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .max()
    };
    ensure_installed("PostgreSQL", || newest().is_some());
    let version = newest().expect("PostgreSQL is installed");
    PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"))
}

/// The base URL (user `diglot`, trust authentication, database `postgres`) of this test
/// binary's PostgreSQL, started on first use.
pub fn postgres() -> String {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| start_postgres(false).0).clone()
}

/// Like `postgres`, but a server of its own that takes TLS connections only (its
/// certificate signed by the returned test authority): its base URL has no `sslmode`.
pub fn postgres_tls() -> (String, TestCertificates) {
    let (url, certificates) = start_postgres(true);
    (url, certificates.expect("a TLS server has certificates"))
}

fn start_postgres(tls: bool) -> (String, Option<TestCertificates>) {
    let bin = postgres_bin();
    let dir = temp_dir("diglot-pg-");
    let data = dir.join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args(["-U", "diglot", "--auth=trust", "--encoding=UTF8", "--locale=C", "-D"])
        .arg(&data)
        .stdout(Stdio::null());
    as_unprivileged(&mut initdb, &dir);
    let out = initdb.output().expect("initdb runs");
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    let certificates = tls.then(|| {
        let files = certificates(&dir);
        // Clear-text connections over TCP are refused.
        let rules = data.join("pg_hba.conf");
        let text = std::fs::read_to_string(&rules).unwrap();
        let tls_only: String = text
            .lines()
            .map(|line| match line.strip_prefix("host ") {
                Some(rest) => format!("hostssl {rest}\n"),
                None => format!("{line}\n"),
            })
            .collect();
        std::fs::write(&rules, tls_only).unwrap();
        files
    });
    let port = free_port();
    let mut server = Command::new(bin.join("postgres"));
    if let Some(files) = &certificates {
        server
            .args(["-c", "ssl=on"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", files.certificate.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", files.key.display()));
    }
    server
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ])
        .args(["-c", "max_connections=300", "-c", "shared_buffers=32MB"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("postgres.log")).unwrap());
    as_unprivileged(&mut server, &dir);
    at_exit(Some(spawn(server)), None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "diglot"])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (format!("postgres://diglot@127.0.0.1:{port}/postgres"), certificates)
}

/// A new, empty database on the server at `base`; its URL.
pub async fn fresh_database(base: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "diglot_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .expect("the test PostgreSQL accepts a connection");
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("a test database is created");
    drop(client);
    let _ = driver.await;
    let (server, _) = base.rsplit_once('/').expect("a URL with a database");
    format!("{server}/{name}")
}

/// A Redis server of the calling test's own, on a loopback port, keeping nothing on disk.
/// Killed when dropped.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
    /// Set for a server that speaks TLS only.
    pub certificates: Option<TestCertificates>,
}

/// A new Redis server (each call its own process, so a test can kill and restart it).
pub fn redis() -> RedisServer {
    let mut server = RedisServer {
        port: free_port(),
        child: None,
        dir: temp_dir("diglot-redis-"),
        certificates: None,
    };
    server.restart();
    server
}

/// A Redis server that speaks TLS only (`rediss://`), its certificate signed by the test
/// authority in `certificates`.
pub fn redis_tls() -> RedisServer {
    let dir = temp_dir("diglot-redis-");
    let mut server = RedisServer {
        port: free_port(),
        child: None,
        certificates: Some(certificates(&dir)),
        dir,
    };
    server.restart();
    server
}

impl RedisServer {
    pub fn url(&self) -> String {
        let scheme = if self.certificates.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A connection of the test's own, to look at what the replicas keep there.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
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
        let port = self.port.to_string();
        match &self.certificates {
            None => command.args(["--port", &port]),
            Some(files) => command
                .args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(&files.certificate)
                .arg("--tls-key-file")
                .arg(&files.key)
                .arg("--tls-ca-cert-file")
                .arg(&files.authority),
        };
        command
            .args(["--bind", "127.0.0.1"])
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

    /// Whether it answers PING (over TLS: whether it listens).
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.certificates.is_some() {
            return true;
        }
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
