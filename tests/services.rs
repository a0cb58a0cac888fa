//! The test servers themselves: a Redis can be killed and restarted on its port, and each
//! fresh PostgreSQL database is new and empty.

mod common;

use std::io::{Read, Write};

/// Redis's answer to one PING at `url`, or None when nothing answers.
fn ping(url: &str) -> Option<String> {
    let address = url.strip_prefix("redis://")?;
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.write_all(b"PING\r\n").ok()?;
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).ok()?;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

#[test]
fn a_redis_is_killed_and_restarted_on_its_port() {
    let mut redis = common::redis();
    let url = redis.url();
    assert_eq!(ping(&url).as_deref(), Some("+PONG\r\n"));
    assert_ne!(common::redis().url(), url, "each call its own server");
    redis.kill();
    assert_eq!(ping(&url), None, "killed");
    redis.restart();
    assert_eq!(redis.url(), url);
    assert_eq!(ping(&url).as_deref(), Some("+PONG\r\n"), "back on the same port");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_fresh_database_is_new_and_empty() {
    let base = common::postgres();
    assert_eq!(common::postgres(), base, "one server per test binary");
    let (one, two) = (common::fresh_database(&base).await, common::fresh_database(&base).await);
    assert_ne!(one, two);
    let (client, connection) = tokio_postgres::connect(&one, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let tables: i64 = client
        .query_one("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
}
