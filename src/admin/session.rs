//! Who calls the admin API: a session cookie from signing in (with the admin password,
//! or with an API token), or an API token sent as `Authorization: Bearer`. Sessions
//! (`sessions.rs`) carry a CSRF token each; sign-ins are limited per address.

use std::net::IpAddr;
use std::sync::Arc;

use salvo::http::StatusCode;
use salvo::http::cookie::{Cookie, SameSite};
use salvo::oapi::ToSchema;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult, json_body};
use super::sessions::Session;
use super::{Admin, admin};
use crate::gateway::Snapshot;
use crate::gateway::auth::presented_token;
use crate::store::secrets::{digest, random_secret, same, verify_password};
use crate::store::{Role, TokenRecord};

pub const COOKIE: &str = "diglot_session";

/// Who is calling, for handlers and the audit log.
#[derive(Clone)]
pub struct Principal {
    pub role: Role,
    /// As the audit log names it.
    pub actor: String,
    pub token: Option<Arc<TokenRecord>>,
    pub ip: IpAddr,
    /// The session's cookie digest and CSRF token, when signed in with a cookie.
    session: Option<(String, String)>,
}

/// What signing in takes: the admin password, or an API token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub password: Option<String>,
    /// An API token: its holder sees its own usage (role "user") or everything ("admin").
    pub token: Option<String>,
}

/// The signed-in session.
#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    pub role: Role,
    /// "password" or "token".
    pub via: &'static str,
    pub token_prefix: Option<String>,
    /// Send it as `x-csrf-token` with every call that changes something.
    pub csrf_token: Option<String>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

/// The admin password's hash: the profile's (or `DIGLOT_ADMIN__PASSWORD`'s), else the
/// one `diglot admin set-password` kept in the store.
pub async fn password_hash(admin: &Admin, live: &Snapshot) -> Option<String> {
    if !live.config.admin.password_hash.is_empty() {
        return Some(live.config.admin.password_hash.clone());
    }
    let store = admin.gateway.store.as_ref()?;
    let docs = store.documents(PASSWORD_KIND).await.ok()?;
    docs.into_iter()
        .find(|d| d.key == PASSWORD_KEY)
        .and_then(|d| serde_json::from_str::<String>(&d.value).ok())
}

/// Where `diglot admin set-password` keeps the hash.
pub const PASSWORD_KIND: &str = "admin";
pub const PASSWORD_KEY: &str = "password_hash";

fn no_password() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no admin password is set, so nobody can sign in: run `diglot admin set-password` on the \
         server (or set DIGLOT_ADMIN__PASSWORD), or use an API token with role \"admin\" \
         (`diglot token create --name NAME --role admin`)",
    )
}

/// The caller's address (through trusted proxies) and whether the request came over HTTPS.
fn client(req: &Request, live: &Snapshot) -> (IpAddr, bool) {
    let peer = req
        .remote_addr()
        .clone()
        .into_std()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let ip = live.auth.client_ip(peer, header("x-forwarded-for"));
    let https = req.uri().scheme_str() == Some("https")
        || (live.auth.trusts(peer) && header("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https")));
    (ip, https)
}

fn live(depot: &Depot) -> Arc<Snapshot> {
    depot
        .get_typed::<Arc<Snapshot>>()
        .cloned()
        .unwrap_or_else(|_| admin(depot).gateway.snapshot())
}

/// Sign in with the admin password or an API token: sets the session cookie and returns
/// the CSRF token. At most 5 attempts a minute per address.
#[endpoint(tags("session"), request_body = Login)]
pub async fn log_in(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<Json<SessionInfo>> {
    let admin = admin(depot);
    let live = live(depot);
    let (ip, https) = client(req, &live);
    admin.sessions.attempt(ip)?;
    let login: Login = json_body(req, 64 * 1024).await?;
    let token = match (login.password, login.token) {
        (Some(password), None) => {
            let Some(hash) = password_hash(&admin, &live).await else {
                return Err(no_password());
            };
            let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
                .await
                .unwrap_or(false);
            if !ok {
                return Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong password"));
            }
            None
        }
        (None, Some(token)) => {
            let token = live.auth.identify(ip, token.trim()).await.map_err(|e| {
                ApiError::new(
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
                    e.message,
                )
            })?;
            Some(token)
        }
        _ => return Err(ApiError::invalid("password", "send either \"password\" or \"token\"")),
    };
    let secret = random_secret();
    let hours = live.config.admin.session_hours;
    let session = Session {
        token: token.as_ref().map(|t| t.digest.clone()),
        csrf: random_secret(),
        expires_at: chrono::Utc::now().timestamp() + hours as i64 * 3600,
    };
    let info = SessionInfo {
        role: token.as_ref().map_or(Role::Admin, |t| t.role),
        via: if token.is_some() { "token" } else { "password" },
        token_prefix: token.as_ref().map(|t| t.prefix.clone()),
        csrf_token: Some(session.csrf.clone()),
        expires_at: Some(session.expires_at),
    };
    admin.sessions.insert(digest(&secret), session).await?;
    let cookie = Cookie::build((COOKIE, secret))
        .path("/admin")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(live.config.admin.secure_cookies || https)
        .max_age(salvo::http::cookie::time::Duration::hours(hours as i64))
        .build();
    res.add_cookie(cookie);
    Ok(Json(info))
}

/// Ends the session and clears its cookie.
#[endpoint(tags("session"), status_codes(204, 401, 403))]
pub async fn log_out(depot: &mut Depot, res: &mut Response) -> ApiResult<StatusCode> {
    let admin = admin(depot);
    if let Ok(principal) = depot.get_typed::<Principal>()
        && let Some((session, _)) = &principal.session
    {
        admin.sessions.remove(session).await;
    }
    let cookie = Cookie::build((COOKIE, ""))
        .path("/admin")
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(salvo::http::cookie::time::Duration::ZERO)
        .build();
    res.add_cookie(cookie);
    Ok(StatusCode::NO_CONTENT)
}

/// Who is signed in, and the CSRF token of the session.
#[endpoint(tags("session"))]
pub async fn current(depot: &mut Depot) -> ApiResult<Json<SessionInfo>> {
    let principal = principal(depot)?;
    let admin = admin(depot);
    let session = match &principal.session {
        Some((id, _)) => admin.sessions.get(id).await,
        None => None,
    };
    Ok(Json(SessionInfo {
        role: principal.role,
        via: if principal.token.is_some() { "token" } else { "password" },
        token_prefix: principal.token.as_ref().map(|t| t.prefix.clone()),
        csrf_token: principal.session.as_ref().map(|(_, csrf)| csrf.clone()),
        expires_at: session.map(|s| s.expires_at),
    }))
}

/// The caller, as `identify` left it.
pub fn principal(depot: &Depot) -> ApiResult<Principal> {
    depot
        .get_typed::<Principal>()
        .cloned()
        .map_err(|_| ApiError::new(StatusCode::UNAUTHORIZED, "not signed in"))
}

/// Finds out who calls (a bearer token, else the session cookie), checks the CSRF token
/// of a cookie session on every call that changes something, and leaves the `Principal`.
#[handler]
pub async fn identify(req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    match who(req, depot).await {
        Ok(principal) => {
            depot.insert_typed(principal);
        }
        Err(error) => {
            ctrl.skip_rest();
            super::error::write(res, &error);
        }
    }
}

async fn who(req: &mut Request, depot: &Depot) -> ApiResult<Principal> {
    let admin = admin(depot);
    let live = live(depot);
    let (ip, _) = client(req, &live);
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if let Some(presented) = presented_token(header("authorization"), header("x-api-key"), None) {
        let token = live.auth.identify(ip, &presented).await.map_err(|e| {
            ApiError::new(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
                e.message,
            )
        })?;
        return Ok(Principal {
            role: token.role,
            actor: format!("token {}", token.prefix),
            token: Some(token),
            ip,
            session: None,
        });
    }
    let Some(cookie) = req
        .cookie(COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
    else {
        if password_hash(&admin, &live).await.is_none() {
            return Err(no_password());
        }
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "not signed in: POST /admin/api/login with the password (or a token), or send an API token as `Authorization: Bearer`",
        ));
    };
    let id = digest(&cookie);
    let session = admin
        .sessions
        .get(&id)
        .await
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "the session has ended: sign in again"))?;
    let changes = !matches!(*req.method(), salvo::http::Method::GET | salvo::http::Method::HEAD);
    if changes {
        let sent = header("x-csrf-token").unwrap_or_default();
        if !same(sent, &session.csrf) {
            return Err(ApiError::forbidden(
                "this call changes something and needs the session's CSRF token in the x-csrf-token header \
                 (from the sign-in answer, or GET /admin/api/session)",
            ));
        }
    }
    let token = match &session.token {
        Some(wanted) => match live.auth.by_digest(wanted, ip) {
            Ok(token) => Some(token),
            Err(e) => {
                admin.sessions.remove(&id).await;
                return Err(ApiError::new(StatusCode::UNAUTHORIZED, e.message));
            }
        },
        None => None,
    };
    Ok(Principal {
        role: token.as_ref().map_or(Role::Admin, |t| t.role),
        actor: token
            .as_ref()
            .map_or_else(|| "admin (password)".to_owned(), |t| format!("token {}", t.prefix)),
        token,
        ip,
        session: Some((id, session.csrf.clone())),
    })
}

/// Lets only admins past: a user token sees nothing but its own record.
#[handler]
pub async fn admins_only(depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    let role = depot.get_typed::<Principal>().map(|p| p.role);
    if role.ok() != Some(Role::Admin) {
        ctrl.skip_rest();
        let error =
            ApiError::forbidden("this needs an admin: a user token may read only /admin/api/me and /admin/api/me/logs");
        super::error::write(res, &error);
    }
}

/// Refuses addresses outside `[admin] allow_ips`, and everything when `[admin] enabled`
/// is false.
#[handler]
pub async fn gate(req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    let live = live(depot);
    let settings = &live.config.admin;
    let refuse = |res: &mut Response, ctrl: &mut FlowCtrl, error: ApiError| {
        ctrl.skip_rest();
        super::error::write(res, &error);
    };
    if !settings.enabled {
        return refuse(
            res,
            ctrl,
            ApiError::not_found("the admin API is off ([admin] enabled = false)"),
        );
    }
    let (ip, _) = client(req, &live);
    if !settings.allow_ips.is_empty() {
        let allowed = settings
            .allow_ips
            .iter()
            .filter_map(|n| crate::gateway::auth::parse_net(n).ok())
            .any(|net| net.contains(&ip));
        if !allowed {
            return refuse(
                res,
                ctrl,
                ApiError::forbidden(format!("{ip} may not reach /admin: see [admin] allow_ips")),
            );
        }
    }
}
