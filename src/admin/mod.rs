//! The admin REST API under `/admin/api` (tokens, channels, models, usage, settings, the
//! audit log, a live tail), its OpenAPI document, the reference at `/admin/docs`, and
//! the web UI (`ui`) at `/admin`.
//! It changes diglot only through the gateway (the live overlay, the shared token
//! implementation) and the store, so a change applies at once and survives restarts.

mod audit;
mod channels;
mod error;
mod me;
mod models;
mod session;
mod sessions;
mod settings;
mod tokens;
mod ui;
mod usage;

use std::sync::{Arc, OnceLock};

use salvo::affix_state;
use salvo::oapi::security::{Http, HttpAuthScheme, SecurityScheme};
use salvo::oapi::swagger_ui::{Config as SwaggerConfig, SwaggerUi};
use salvo::oapi::{OpenApi, SecurityRequirement};
use salvo::prelude::*;

pub use error::{ApiError, ApiResult};
pub use session::{PASSWORD_KEY, PASSWORD_KIND};

use crate::gateway::Gateway;
use crate::telemetry::tail::Tail;

/// What the admin API's handlers share.
pub struct Admin {
    pub gateway: Arc<Gateway>,
    sessions: sessions::Sessions,
    /// Access lines as they are written, for `/admin/api/logs/stream`.
    tail: Tail,
}

impl Admin {
    pub fn new(gateway: Arc<Gateway>, tail: Tail) -> Arc<Self> {
        Arc::new(Self {
            sessions: sessions::Sessions::new(gateway.store.clone()),
            gateway,
            tail,
        })
    }
}

/// The admin state a handler runs with.
fn admin(depot: &Depot) -> Arc<Admin> {
    depot
        .get_typed::<Arc<Admin>>()
        .cloned()
        .expect("the admin router injects its state")
}

/// The largest JSON body the admin API reads.
const MAX_BODY: usize = 1024 * 1024;

/// The admin routes with their hoops (without the documentation routes).
fn api() -> Router {
    let admin_only = Router::new()
        .hoop(session::admins_only)
        .push(
            Router::with_path("tokens").get(tokens::list).post(tokens::create).push(
                Router::with_path("{id}")
                    .get(tokens::get)
                    .patch(tokens::update)
                    .delete(tokens::delete),
            ),
        )
        .push(
            Router::with_path("channels")
                .get(channels::list)
                .post(channels::create)
                .push(
                    Router::with_path("{name}")
                        .get(channels::get)
                        .patch(channels::update)
                        .delete(channels::delete)
                        .push(Router::with_path("test").post(channels::test)),
                ),
        )
        .push(
            Router::with_path("models")
                .get(models::list)
                .push(Router::with_path("{pattern}").put(models::put).delete(models::delete)),
        )
        .push(
            Router::with_path("logs")
                .get(usage::logs)
                .push(Router::with_path("stream").get(usage::stream)),
        )
        .push(Router::with_path("dashboard").get(usage::dashboard))
        .push(Router::with_path("settings").get(settings::get).patch(settings::update))
        .push(Router::with_path("audit").get(audit::list));
    let signed_in = Router::new()
        .hoop(session::identify)
        .push(Router::with_path("logout").post(session::log_out))
        .push(Router::with_path("session").get(session::current))
        .push(
            Router::with_path("me")
                .get(me::me)
                .push(Router::with_path("logs").get(me::logs)),
        )
        .push(admin_only);
    Router::with_path("admin/api")
        .push(Router::with_path("login").post(session::log_in))
        .push(signed_in)
}

/// The OpenAPI document of `api`.
fn document(api: &Router) -> OpenApi {
    OpenApi::new("diglot admin API", env!("CARGO_PKG_VERSION"))
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::new(HttpAuthScheme::Bearer).description(
                    "An API token with role \"admin\" (a role \"user\" token reaches only /admin/api/me*)",
                ),
            ),
        )
        .add_security_scheme(
            "session",
            SecurityScheme::ApiKey(salvo::oapi::security::ApiKey::Cookie(
                salvo::oapi::security::ApiKeyValue::with_description(
                    session::COOKIE,
                    "Set by POST /admin/api/login; calls that change something also need x-csrf-token",
                ),
            )),
        )
        .security([
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("session", Vec::<String>::new()),
        ])
        .merge_router(api)
}

/// The OpenAPI document, built when first asked for: building it runs the schema code of
/// every endpoint and held megabytes in every fresh gateway, though few ever read it.
#[derive(Default)]
struct Document(OnceLock<OpenApi>);

#[async_trait]
impl Handler for Document {
    async fn handle(&self, req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
        let document = self.0.get_or_init(|| document(&api()));
        document.handle(req, depot, res, ctrl).await;
    }
}

/// `/admin`: the API, its OpenAPI document at `/admin/api/openapi.json`, Swagger UI
/// (assets embedded in the binary) at `/admin/docs`, and the web UI at `/admin` and every
/// other path under it.
pub fn router(admin: Arc<Admin>) -> Router {
    let docs =
        SwaggerUi::new(SwaggerConfig::new(["/admin/api/openapi.json"]).validator_url("none")).title("diglot admin API");
    Router::new()
        .hoop(affix_state::inject(admin))
        .hoop(session::gate)
        .push(Router::with_path("admin/api/openapi.json").goal(Document::default()))
        .push(api())
        .push(Router::with_path("admin/docs/{**}").goal(docs))
        .push(Router::with_path("admin").goal(ui::serve))
        .push(Router::with_path("admin/{**rest}").goal(ui::serve))
}

/// Writes one audit entry for a change `principal` made (the values already without
/// secrets); a failure to write it is logged, the change stands.
async fn audit(
    admin: &Admin,
    principal: &session::Principal,
    action: &str,
    target: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) {
    let Some(store) = &admin.gateway.store else { return };
    let entry = crate::store::AuditEntry {
        id: 0,
        at_ms: chrono::Utc::now().timestamp_millis(),
        actor: principal.actor.clone(),
        ip: principal.ip.to_string(),
        action: action.to_owned(),
        target: target.to_owned(),
        before: before.map(|v| v.to_string()),
        after: after.map(|v| v.to_string()),
    };
    if let Err(e) = store.add_audit(&entry).await {
        tracing::error!(error = %e, action, target, "the audit entry could not be written");
    }
}
