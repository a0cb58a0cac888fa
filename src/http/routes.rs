//! The route table, declared once as data: the router is built from it, and each
//! request's route pattern (for spans and metric labels), frontend (for the shape of its
//! errors) and access rule are read from it.

use salvo::handler::ArcHandler;
use salvo::http::Method;
use salvo::prelude::*;
use salvo::routing::filters::MethodFilter;

use super::{anthropic, ollama, openai, responses, service};
use crate::protocol::Frontend;

/// Who may call a route before the token is checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Anyone: what clients ask before they know of a token (`/`, `/api/version`, `GET /v1`).
    Public,
    /// Anyone; details only for admins (liveness probes come from anywhere).
    Health,
    /// Scrapers with the metrics token, or admins.
    Metrics,
    /// Callers with a valid token, when tokens are required.
    Api,
    /// The admin API and its reference: signed in on their own terms (`admin::session`),
    /// and only from pages of diglot's own origin.
    Admin,
}

pub struct Route {
    pub methods: &'static [Method],
    /// As salvo matches it, from the root (also served under the base path, but for
    /// `Health` and `Metrics` routes).
    pub path: &'static str,
    /// The pattern spans and metrics name it by.
    pub label: &'static str,
    pub frontend: Frontend,
    pub access: Access,
    /// The body is JSON (POSTs but blob uploads): a browser must send it as JSON.
    pub json_body: bool,
    pub handler: ArcHandler,
}

const GET: &[Method] = &[Method::GET];
const GET_HEAD: &[Method] = &[Method::GET, Method::HEAD];
const POST: &[Method] = &[Method::POST];
const POST_HEAD: &[Method] = &[Method::POST, Method::HEAD];
const DELETE: &[Method] = &[Method::DELETE];

fn route(methods: &'static [Method], path: &'static str, frontend: Frontend, handler: impl Handler) -> Route {
    Route {
        methods,
        path,
        label: path,
        frontend,
        access: Access::Api,
        json_body: methods.contains(&Method::POST),
        handler: handler.arc(),
    }
}

/// An OpenAI route, served under `/v1` and without it, as clients configure either.
macro_rules! openai {
    ($methods:expr, $path:literal, $label:literal, $handler:expr) => {
        [
            Route {
                label: concat!("/v1", $label),
                ..route($methods, concat!("/v1", $path), Frontend::OpenAi, $handler)
            },
            Route {
                label: $label,
                ..route($methods, $path, Frontend::OpenAi, $handler)
            },
        ]
    };
}

/// An Anthropic route, served under `/v1` and without it: clients append `/v1/messages`
/// to a base URL that may already end in `/v1`.
macro_rules! anthropic {
    ($path:literal, $handler:expr) => {
        [
            route(POST, concat!("/v1", $path), Frontend::Anthropic, $handler),
            route(POST, $path, Frontend::Anthropic, $handler),
        ]
    };
}

/// Every route diglot serves (`/metrics` only while metrics are on: see `router`).
pub fn table() -> Vec<Route> {
    use Frontend::{Ollama, OpenAi};
    let public = |route: Route| Route {
        access: Access::Public,
        ..route
    };
    // Salvo tries the routes in this order: the ones clients call most come first.
    let mut routes = Vec::new();
    routes.extend(openai!(
        POST,
        "/chat/completions",
        "/chat/completions",
        openai::chat_completions
    ));
    routes.push(route(POST, "/api/chat", Ollama, ollama::chat));
    routes.extend(anthropic!("/messages", anthropic::messages));
    routes.extend(openai!(POST, "/responses", "/responses", responses::create));
    routes.extend([
        route(POST, "/api/generate", Ollama, ollama::generate),
        route(POST, "/api/embed", Ollama, ollama::embed),
        public(route(GET_HEAD, "/", OpenAi, ollama::running)),
        public(route(GET_HEAD, "/api/version", Ollama, ollama::version)),
        route(GET_HEAD, "/api/tags", Ollama, ollama::tags),
        route(POST, "/api/show", Ollama, ollama::show),
        route(GET, "/api/ps", Ollama, ollama::ps),
        route(POST, "/api/embeddings", Ollama, ollama::embeddings),
        route(POST, "/api/pull", Ollama, ollama::pull),
        route(POST, "/api/push", Ollama, ollama::manage),
        route(POST, "/api/create", Ollama, ollama::manage),
        route(POST, "/api/copy", Ollama, ollama::manage),
        route(DELETE, "/api/delete", Ollama, ollama::manage),
        Route {
            json_body: false,
            ..route(POST_HEAD, "/api/blobs/{digest}", Ollama, ollama::manage)
        },
        public(route(GET, "/v1", OpenAi, openai::connection_test)),
    ]);
    routes.extend(openai!(POST, "/completions", "/completions", openai::completions));
    routes.extend(openai!(POST, "/embeddings", "/embeddings", openai::embeddings));
    routes.extend(openai!(GET, "/models", "/models", openai::list_models));
    routes.extend(openai!(GET, "/models/{**id}", "/models/{model}", openai::get_model));
    routes.extend(anthropic!("/messages/count_tokens", anthropic::count_tokens));
    routes.extend(openai!(
        GET,
        "/responses/{id}/input_items",
        "/responses/{id}/input_items",
        responses::input_items
    ));
    routes.extend(openai!(GET, "/responses/{id}", "/responses/{id}", responses::get));
    routes.extend(openai!(DELETE, "/responses/{id}", "/responses/{id}", responses::delete));
    routes.push(Route {
        access: Access::Health,
        ..route(GET, "/health", OpenAi, service::health)
    });
    routes.push(Route {
        access: Access::Health,
        ..route(GET, "/health/live", OpenAi, service::alive)
    });
    routes.push(Route {
        access: Access::Health,
        ..route(GET, "/health/ready", OpenAi, service::readiness)
    });
    routes.push(Route {
        access: Access::Metrics,
        ..route(GET, "/metrics", OpenAi, service::prometheus)
    });
    // The admin router (`admin::router`) serves what is under `/admin`; these entries
    // name it for spans, metrics and the hoops.
    for path in ["/admin", "/admin/{**rest}"] {
        routes.push(Route {
            access: Access::Admin,
            label: "/admin",
            json_body: false,
            ..route(ADMIN, path, OpenAi, service::no_route)
        });
    }
    routes
}

const ADMIN: &[Method] = &[Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// The table as a salvo router: every route at the root and under `base` (a base path
/// like `/ollama`, or ""), `/metrics` only when `metrics` are on, then `admin` (the admin
/// API's own router), and a 404 in OpenAI's shape for anything else.
pub fn router(routes: &[Route], base: &str, metrics: bool, admin: Router) -> Router {
    let mut root = Router::new();
    let served_here = |r: &&Route| (metrics || r.access != Access::Metrics) && r.access != Access::Admin;
    for route in routes.iter().filter(served_here) {
        let mut prefixes = vec![""];
        if !base.is_empty() && matches!(route.access, Access::Public | Access::Api) {
            prefixes.push(base);
        }
        for prefix in prefixes {
            let path = format!("{prefix}{}", route.path);
            let mut router = match path.trim_start_matches('/') {
                "" => Router::new(),
                path => Router::with_path(path.to_owned()),
            };
            for method in route.methods {
                router = router.push(Router::with_filter(MethodFilter(method.clone())).goal(route.handler.clone()));
            }
            root = root.push(router);
        }
    }
    root.push(admin)
        .push(Router::with_path("{**rest}").goal(service::no_route))
}

/// The route `path` belongs to (`base` is the configured base path), if any.
pub fn route_of<'r>(routes: &'r [Route], path: &str, base: &str) -> Option<&'r Route> {
    let path = path
        .strip_prefix(base)
        .filter(|p| !base.is_empty() && (p.is_empty() || p.starts_with('/')))
        .unwrap_or(path);
    let path = match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    routes.iter().find(|route| match route.path.split_once('{') {
        Some((prefix, rest)) => {
            // What follows the parameter (`/input_items`), when it is one segment.
            let suffix = rest.split_once('}').map_or("", |(_, s)| s);
            path.len() > prefix.len() + suffix.len()
                && path.starts_with(prefix)
                && path.ends_with(suffix)
                && (suffix.is_empty() || !path[prefix.len()..path.len() - suffix.len()].contains('/'))
        }
        None => route.path == path,
    })
}

/// The API a path belongs to, for the shape of its errors and for usage records: its
/// route's, or for a path diglot does not serve, Ollama's under `/api/`, else OpenAI's.
pub fn frontend_of(route: Option<&Route>, path: &str, base: &str) -> Frontend {
    if let Some(route) = route {
        return route.frontend;
    }
    let path = path.strip_prefix(base).unwrap_or(path);
    if path.starts_with("/api/") {
        Frontend::Ollama
    } else {
        Frontend::OpenAi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_route_patterns() {
        let routes = table();
        let label = |path: &str, base: &str| route_of(&routes, path, base).map_or("", |r| r.label);
        assert_eq!(label("/v1/chat/completions", ""), "/v1/chat/completions");
        assert_eq!(label("/chat/completions", ""), "/chat/completions");
        assert_eq!(label("/ollama/api/chat", "/ollama"), "/api/chat");
        assert_eq!(label("/v1/models/llama3.2:1b", ""), "/v1/models/{model}");
        assert_eq!(label("/models/llama3.2:1b", ""), "/models/{model}");
        assert_eq!(label("/api/blobs/sha256:abc", ""), "/api/blobs/{digest}");
        assert_eq!(label("/", ""), "/");
        assert_eq!(label("/ollama", "/ollama"), "/");
        assert_eq!(label("/v1/", ""), "/v1");
        assert_eq!(label("/wp-admin/login.php", ""), "");
        assert_eq!(label("/v1/models/", ""), "/v1/models");
        assert_eq!(label("/v1/messages", ""), "/v1/messages");
        assert_eq!(
            label("/ollama/messages/count_tokens", "/ollama"),
            "/messages/count_tokens"
        );
        assert_eq!(label("/v1/responses/resp_1", ""), "/v1/responses/{id}");
        assert_eq!(
            label("/v1/responses/resp_1/input_items", ""),
            "/v1/responses/{id}/input_items"
        );
        assert_eq!(label("/ollama/responses/resp_1", "/ollama"), "/responses/{id}");
    }

    #[test]
    fn public_paths_are_the_probes() {
        let routes = table();
        let access = |path: &str| route_of(&routes, path, "").map(|r| r.access);
        for path in ["/", "/api/version", "/v1", "/v1/"] {
            assert_eq!(access(path), Some(Access::Public), "{path}");
        }
        assert_eq!(access("/api/tags"), Some(Access::Api));
        assert_eq!(access("/metrics"), Some(Access::Metrics));
        assert_eq!(access("/admin"), Some(Access::Admin));
        assert_eq!(access("/admin/api/tokens/3"), Some(Access::Admin));
    }
}
