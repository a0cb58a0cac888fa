//! What every limiter decides the same way, wherever its counts live: which limits apply
//! to a caller, and how a refusal reads (message, `Retry-After`, `x-ratelimit-*`).

use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};

use crate::config::LimitsConfig;
use crate::gateway::auth::Caller;
use crate::ir::{Error, ErrorKind};

/// The length of a rate window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// One limit that applies to a request.
pub struct Rule {
    /// Names its counts (`global`, `ip:ADDR`, `token:DIGEST`).
    pub key: String,
    /// `global`, `ip` or `token`, for the metrics.
    pub scope: &'static str,
    pub what: &'static str,
    pub rpm: u64,
    pub tpm: u64,
}

impl Rule {
    /// The limits that apply to `caller` (none allocated when none are set).
    pub fn all(config: &LimitsConfig, caller: &Caller) -> Vec<Rule> {
        let mut rules = Vec::new();
        if config.rpm > 0 || config.tpm > 0 {
            rules.push(Rule {
                key: "global".into(),
                scope: "global",
                what: "the gateway",
                rpm: config.rpm,
                tpm: config.tpm,
            });
        }
        if config.ip_rpm > 0 || config.ip_tpm > 0 {
            rules.push(Rule {
                key: ["ip:", caller.ip_text()].concat(),
                scope: "ip",
                what: "your address",
                rpm: config.ip_rpm,
                tpm: config.ip_tpm,
            });
        }
        if let Some(token) = &caller.token
            && (token.rpm.is_some() || token.tpm.is_some())
        {
            rules.push(Rule {
                key: ["token:", &token.digest].concat(),
                scope: "token",
                what: "your API token",
                rpm: token.rpm.unwrap_or(0),
                tpm: token.tpm.unwrap_or(0),
            });
        }
        rules
    }

    /// The refusal when this rule's window holds `requests` and `tokens` already and a
    /// request of `estimate` tokens does not fit; `None` when it fits.
    pub fn refusal(&self, requests: u64, tokens: u64, estimate: u64, reset: Duration) -> Option<Error> {
        let message = if self.rpm > 0 && requests + 1 > self.rpm {
            format!("rate limit reached: {} requests per minute for {}", self.rpm, self.what)
        } else if self.tpm > 0 && tokens + estimate > self.tpm {
            format!(
                "rate limit reached: {} tokens per minute for {} (this request may use {estimate})",
                self.tpm, self.what
            )
        } else {
            return None;
        };
        Some(limited(message, reset, self.headers(requests, tokens, reset)))
    }

    fn headers(&self, requests: u64, tokens: u64, reset: Duration) -> Vec<(String, String)> {
        let reset = format!("{}s", reset.as_secs().max(1));
        let mut headers = Vec::new();
        if self.rpm > 0 {
            headers.push(("x-ratelimit-limit-requests".into(), self.rpm.to_string()));
            headers.push((
                "x-ratelimit-remaining-requests".into(),
                self.rpm.saturating_sub(requests).to_string(),
            ));
            headers.push(("x-ratelimit-reset-requests".into(), reset.clone()));
        }
        if self.tpm > 0 {
            headers.push(("x-ratelimit-limit-tokens".into(), self.tpm.to_string()));
            headers.push((
                "x-ratelimit-remaining-tokens".into(),
                self.tpm.saturating_sub(tokens).to_string(),
            ));
            headers.push(("x-ratelimit-reset-tokens".into(), reset));
        }
        headers
    }
}

/// A 429 saying `message`, to retry after `retry_after`.
pub fn limited(message: String, retry_after: Duration, headers: Vec<(String, String)>) -> Error {
    Error {
        retry_after: Some(retry_after),
        headers,
        ..Error::new(ErrorKind::RateLimited, message)
    }
}

/// The refusal of a token at its `max_concurrent`.
pub fn too_many_at_once(max: u32) -> Error {
    limited(
        format!("your API token allows {max} requests at a time; wait for one to finish"),
        Duration::from_secs(1),
        Vec::new(),
    )
}

/// The refusal of a request that does not fit the token's monthly quota.
pub fn over_quota(token: &str, quota: u64, left: u64, estimate: u64) -> Error {
    Error {
        code: Some("insufficient_quota"),
        ..limited(
            quota_message(token, quota, left, estimate),
            until_next_month(),
            Vec::new(),
        )
    }
}

/// Why a request does not fit the token's monthly quota, and what to do about it.
fn quota_message(token: &str, quota: u64, left: u64, estimate: u64) -> String {
    let renews = "the quota renews on the 1st of next month (UTC)";
    if left == 0 {
        format!("the API token '{token}' has used all of its monthly quota of {quota} tokens; {renews}")
    } else {
        format!(
            "the API token '{token}' has {left} of its monthly {quota} tokens left, but this request may use {estimate} (its prompt plus max_tokens): ask for fewer tokens, or wait until {renews}"
        )
    }
}

/// The first instant of the current month (UTC), in unix milliseconds.
pub fn month_start_ms() -> i64 {
    let now = Utc::now();
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .map_or(0, |t| t.timestamp_millis())
}

fn until_next_month() -> Duration {
    let now = Utc::now();
    let (year, month) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .map_or(Duration::from_secs(3600), |next| {
            (next - now).to_std().unwrap_or(Duration::from_secs(3600))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_message_says_what_is_left_and_what_to_do() {
        let partly = quota_message("t", 600, 540, 900);
        assert_eq!(
            partly,
            "the API token 't' has 540 of its monthly 600 tokens left, but this request may use 900 (its prompt plus max_tokens): ask for fewer tokens, or wait until the quota renews on the 1st of next month (UTC)"
        );
        let spent = quota_message("t", 600, 0, 10);
        assert_eq!(
            spent,
            "the API token 't' has used all of its monthly quota of 600 tokens; the quota renews on the 1st of next month (UTC)"
        );
    }
}
