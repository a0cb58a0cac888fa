//! What the store keeps besides usage, each case on both engines: tokens, documents
//! (one by key too), the audit log, and kept responses.

use std::sync::Arc;

use diglot::store::{AuditEntry, Document, Role, Store, StoredResponse, TokenRecord};

on_both_engines!(
    tokens_are_created_updated_and_deleted,
    documents_are_written_replaced_and_deleted_per_kind,
    one_document_is_read_by_its_key,
    the_audit_log_pages_newest_first,
    responses_are_kept_per_owner_until_they_expire,
);

async fn tokens_are_created_updated_and_deleted(store: Arc<dyn Store>) {
    assert!(store.tokens().await.unwrap().is_empty());
    let alice = store
        .create_token(&TokenRecord {
            created_at: 1_700_000_000,
            ..TokenRecord::for_secret("alice", "dg-alice-secret", Role::User)
        })
        .await
        .unwrap();
    let admin = TokenRecord {
        models: vec!["llama*".into(), "qwen3".into()],
        ips: vec!["10.0.0.0/8".into()],
        expires_at: Some(1_800_000_000),
        monthly_quota: Some(1_000_000),
        rpm: Some(60),
        tpm: Some(u64::MAX),
        max_concurrent: Some(4),
        ..TokenRecord::for_secret("root", "dg-root-secret", Role::Admin)
    };
    let admin = store.create_token(&admin).await.unwrap();
    assert!(alice.id.unwrap() < admin.id.unwrap());
    let mut saturated = admin.clone();
    saturated.tpm = Some(i64::MAX as u64);
    assert_eq!(
        store.tokens().await.unwrap(),
        [alice.clone(), saturated],
        "as written (a count beyond i64 saturates)"
    );
    let same_secret = TokenRecord::for_secret("again", "dg-alice-secret", Role::User);
    assert!(store.create_token(&same_secret).await.is_err(), "a digest is unique");

    let changed = TokenRecord {
        name: "alice2".into(),
        enabled: false,
        rpm: None,
        models: Vec::new(),
        ..admin.clone()
    };
    store.update_token(&changed).await.unwrap();
    let tokens = store.tokens().await.unwrap();
    assert_eq!(tokens[1].name, "alice2");
    assert!(!tokens[1].enabled && tokens[1].rpm.is_none() && tokens[1].models.is_empty());
    assert_eq!(tokens[1].digest, admin.digest, "the digest never changes");

    store.delete_token(alice.id.unwrap()).await.unwrap();
    let error = store.delete_token(alice.id.unwrap()).await.unwrap_err();
    assert!(error.to_string().contains("no token with id"), "{error}");
    let gone = TokenRecord {
        id: Some(999_999),
        ..alice
    };
    assert!(store.update_token(&gone).await.is_err());
    assert_eq!(store.tokens().await.unwrap().len(), 1);
}

async fn one_document_is_read_by_its_key(store: Arc<dyn Store>) {
    assert_eq!(store.document("channel", "local").await.unwrap(), None);
    store
        .put_document("channel", "local", Some(r#"{"v":1}"#))
        .await
        .unwrap();
    store.put_document("model", "local", Some(r#"{"m":1}"#)).await.unwrap();
    let found = store.document("channel", "local").await.unwrap().unwrap();
    assert_eq!((found.key.as_str(), found.value.as_str()), ("local", r#"{"v":1}"#));
    assert_eq!(store.document("channel", "other").await.unwrap(), None);
    store.put_document("channel", "local", None).await.unwrap();
    assert_eq!(store.document("channel", "local").await.unwrap(), None);
    assert!(store.document("model", "local").await.unwrap().is_some());
}

async fn documents_are_written_replaced_and_deleted_per_kind(store: Arc<dyn Store>) {
    assert!(store.documents("channel").await.unwrap().is_empty());
    assert!(
        !store
            .put_document("channel", "local", Some(r#"{"v":1}"#))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_document("channel", "cloud", Some(r#"{"v":2}"#))
            .await
            .unwrap()
    );
    assert!(
        !store.put_document("model", "local", Some(r#"{"m":1}"#)).await.unwrap(),
        "another kind"
    );
    assert!(
        store
            .put_document("channel", "local", Some(r#"{"v":3}"#))
            .await
            .unwrap(),
        "replaced"
    );

    let channels = store.documents("channel").await.unwrap();
    let keys_values: Vec<(&str, &str)> = channels.iter().map(|d| (d.key.as_str(), d.value.as_str())).collect();
    assert_eq!(
        keys_values,
        [("cloud", r#"{"v":2}"#), ("local", r#"{"v":3}"#)],
        "by key"
    );
    let now = chrono::Utc::now().timestamp();
    assert!(channels.iter().all(|d| (now - d.updated_at).abs() < 60));

    assert!(store.put_document("channel", "local", None).await.unwrap());
    assert!(
        !store.put_document("channel", "local", None).await.unwrap(),
        "already gone"
    );
    assert_eq!(store.documents("channel").await.unwrap().len(), 1);
    assert_eq!(
        store.documents("model").await.unwrap(),
        [Document {
            key: "local".into(),
            value: r#"{"m":1}"#.into(),
            updated_at: store.documents("model").await.unwrap()[0].updated_at,
        }],
        "untouched by the other kind's deletion"
    );
}

async fn the_audit_log_pages_newest_first(store: Arc<dyn Store>) {
    assert!(store.audit(None, 10).await.unwrap().is_empty());
    let mut ids = Vec::new();
    for i in 0..7 {
        let entry = AuditEntry {
            at_ms: 1_000 + i,
            actor: "admin session".into(),
            ip: "127.0.0.1".into(),
            action: "channel.update".into(),
            target: format!("channel-{i}"),
            before: (i > 0).then(|| format!(r#"{{"n":{}}}"#, i - 1)),
            after: Some(format!(r#"{{"n":{i}}}"#)),
            ..Default::default()
        };
        let id = store.add_audit(&entry).await.unwrap();
        assert_eq!(store.audit(None, 1).await.unwrap(), [AuditEntry { id, ..entry }]);
        ids.push(id);
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.audit(before, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|e| e.id));
        before = page.last().map(|e| e.id);
    }
    ids.reverse();
    assert_eq!(seen, ids, "each entry once, newest first");
}

async fn responses_are_kept_per_owner_until_they_expire(store: Arc<dyn Store>) {
    let response = |id: &str, created_at: i64, expires_at: i64| StoredResponse {
        id: id.into(),
        owner: "alice".into(),
        created_at,
        expires_at,
        response: "{}".into(),
        input: "[]".into(),
        history: "[]".into(),
        items: vec![(format!("msg_{id}"), "{}".into())],
    };
    store.save_response(&response("resp_a", 100, 200)).await.unwrap();
    let kept = store.response("resp_a", "alice", 150).await.unwrap().unwrap();
    assert_eq!(
        kept,
        StoredResponse {
            items: Vec::new(),
            ..response("resp_a", 100, 200)
        }
    );
    assert_eq!(
        store
            .response_item("msg_resp_a", "alice", 150)
            .await
            .unwrap()
            .as_deref(),
        Some("{}")
    );
    assert_eq!(store.response_item("msg_resp_a", "bob", 150).await.unwrap(), None);
    assert_eq!(
        store.response("resp_a", "bob", 150).await.unwrap(),
        None,
        "another owner's"
    );
    assert_eq!(store.response("resp_a", "alice", 200).await.unwrap(), None, "expired");
    assert!(!store.delete_response("resp_a", "bob").await.unwrap());
    // A later save drops what expired by then.
    store.save_response(&response("resp_b", 300, 400)).await.unwrap();
    assert!(!store.delete_response("resp_a", "alice").await.unwrap());
    assert_eq!(
        store.response_item("msg_resp_a", "alice", 350).await.unwrap(),
        None,
        "expired with it"
    );
    assert!(store.delete_response("resp_b", "alice").await.unwrap());
    assert_eq!(
        store.response_item("msg_resp_b", "alice", 301).await.unwrap(),
        None,
        "deleted with it"
    );
    assert_eq!(store.response("resp_b", "alice", 301).await.unwrap(), None);
}
