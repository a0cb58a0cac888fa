//! Reading rows of `Value`s back into the store's records, the same for both engines.

use super::Value;
use crate::store::{AuditEntry, Document, Role, StoreError, StoreResult, TokenRecord, UsageRecord, frontend_name};

/// One row's cells, read by position.
pub struct Cells<'a>(pub &'a [Value]);

impl Cells<'_> {
    fn cell(&self, i: usize) -> StoreResult<&Value> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError(format!("store: a row has no column {i}")))
    }

    fn wrong(&self, i: usize, wanted: &str) -> StoreError {
        StoreError(format!("store: column {i} is not {wanted}: {:?}", self.0.get(i)))
    }

    pub fn opt_int(&self, i: usize) -> StoreResult<Option<i64>> {
        match self.cell(i)? {
            Value::Null => Ok(None),
            Value::Int(n) => Ok(Some(*n)),
            Value::Bool(b) => Ok(Some(i64::from(*b))),
            Value::Text(_) => Err(self.wrong(i, "an integer")),
        }
    }

    pub fn int(&self, i: usize) -> StoreResult<i64> {
        self.opt_int(i)?.ok_or_else(|| self.wrong(i, "an integer"))
    }

    /// A count: never below 0.
    pub fn count(&self, i: usize) -> StoreResult<u64> {
        Ok(self.opt_int(i)?.unwrap_or(0).max(0) as u64)
    }

    pub fn opt_count(&self, i: usize) -> StoreResult<Option<u64>> {
        Ok(self.opt_int(i)?.map(|n| n.max(0) as u64))
    }

    pub fn flag(&self, i: usize) -> StoreResult<bool> {
        Ok(self.int(i)? != 0)
    }

    pub fn opt_text(&self, i: usize) -> StoreResult<Option<String>> {
        match self.cell(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            _ => Err(self.wrong(i, "text")),
        }
    }

    pub fn text(&self, i: usize) -> StoreResult<String> {
        self.opt_text(i)?.ok_or_else(|| self.wrong(i, "text"))
    }
}

/// The columns `usage` reads, in its order.
pub const USAGE_COLUMNS: &str = "id, at_ms, token_digest, token_prefix, client_ip, frontend, model, channel, \
                                 upstream_model, status, latency_ms, ttft_ms, prompt_tokens, completion_tokens, \
                                 estimated, cache_hit, request_id, trace_id, attempts";

pub fn usage(row: &Cells) -> StoreResult<UsageRecord> {
    Ok(UsageRecord {
        id: row.int(0)?,
        at_ms: row.int(1)?,
        token_digest: row.opt_text(2)?,
        token_prefix: row.opt_text(3)?,
        client_ip: row.opt_text(4)?,
        frontend: frontend_name(&row.text(5)?),
        model: row.text(6)?,
        channel: row.opt_text(7)?,
        upstream_model: row.opt_text(8)?,
        status: row.int(9)?.clamp(0, i64::from(u16::MAX)) as u16,
        latency_ms: row.count(10)?,
        ttft_ms: row.opt_count(11)?,
        prompt_tokens: row.count(12)?,
        completion_tokens: row.count(13)?,
        estimated: row.flag(14)?,
        cache_hit: row.flag(15)?,
        request_id: row.opt_text(16)?,
        trace_id: row.opt_text(17)?,
        attempts: row.count(18)?.min(u64::from(u32::MAX)) as u32,
    })
}

/// The columns `token` reads, in its order.
pub const TOKEN_COLUMNS: &str = "id, name, digest, prefix, role, enabled, created_at, expires_at, models, ips, \
                                 monthly_quota, rpm, tpm, max_concurrent";

pub fn token(row: &Cells) -> StoreResult<TokenRecord> {
    let list = |i: usize| -> StoreResult<Vec<String>> { Ok(serde_json::from_str(&row.text(i)?).unwrap_or_default()) };
    Ok(TokenRecord {
        id: Some(row.int(0)?),
        name: row.text(1)?,
        digest: row.text(2)?,
        prefix: row.text(3)?,
        role: if row.text(4)? == "admin" {
            Role::Admin
        } else {
            Role::User
        },
        enabled: row.flag(5)?,
        created_at: row.int(6)?,
        expires_at: row.opt_int(7)?,
        models: list(8)?,
        ips: list(9)?,
        monthly_quota: row.opt_count(10)?,
        rpm: row.opt_count(11)?,
        tpm: row.opt_count(12)?,
        max_concurrent: row.opt_count(13)?.map(|n| n.min(u64::from(u32::MAX)) as u32),
    })
}

/// `key, value, updated_at`
pub fn document(row: &Cells) -> StoreResult<Document> {
    Ok(Document {
        key: row.text(0)?,
        value: row.text(1)?,
        updated_at: row.int(2)?,
    })
}

/// The columns `audit` reads, in its order.
pub const AUDIT_COLUMNS: &str = "id, at_ms, actor, ip, action, target, before_json, after_json";

pub fn audit(row: &Cells) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: row.int(0)?,
        at_ms: row.int(1)?,
        actor: row.text(2)?,
        ip: row.text(3)?,
        action: row.text(4)?,
        target: row.text(5)?,
        before: row.opt_text(6)?,
        after: row.opt_text(7)?,
    })
}
