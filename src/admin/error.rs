//! The admin API's one error shape, `{"error": {"message", "field"}}`, with its status.

use salvo::http::StatusCode;
use salvo::oapi::{self, Components, EndpointOutRegister, Operation, ToSchema};
use salvo::prelude::*;
use serde::Serialize;

use crate::gateway::tokens::{TokenError, TokenErrorKind};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, when one is.
    pub field: Option<String>,
    /// Seconds to wait (429).
    pub retry_after: Option<u64>,
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong and what to do.
    pub message: String,
    /// The request field at fault (a dotted key for settings), or null.
    pub field: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            field: field.map(str::to_owned),
            ..Self::new(StatusCode::CONFLICT, message)
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A configuration change that did not validate: 400, naming the field when the
    /// message starts with one of `fields` (the configuration says `key: why`).
    pub fn rejected(message: String, fields: &[&str]) -> Self {
        let after_subject = message
            .strip_prefix("channel '")
            .and_then(|rest| rest.split_once("': ").map(|(_, why)| why))
            .unwrap_or(&message);
        let field = fields
            .iter()
            .filter(|f| after_subject.starts_with(**f) && after_subject[f.len()..].starts_with([' ', ':', '.', '[']))
            .max_by_key(|f| f.len());
        Self {
            field: field.map(|f| f.to_string()),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        let status = match error.kind {
            TokenErrorKind::Invalid => StatusCode::BAD_REQUEST,
            TokenErrorKind::NotFound => StatusCode::NOT_FOUND,
            TokenErrorKind::Conflict => StatusCode::CONFLICT,
            TokenErrorKind::Store => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            field: error.field.map(str::to_owned),
            ..Self::new(status, error.message)
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::internal(error.to_string())
    }
}

#[async_trait::async_trait]
impl Writer for ApiError {
    async fn write(self, _req: &mut Request, _depot: &mut Depot, res: &mut Response) {
        write(res, &self);
    }
}

/// Writes `error` as the answer.
pub fn write(res: &mut Response, error: &ApiError) {
    res.status_code(error.status);
    if let Some(seconds) = error.retry_after {
        let _ = res.add_header("retry-after", seconds.to_string(), true);
    }
    res.render(Json(ErrorBody {
        error: ErrorDetail {
            message: error.message.clone(),
            field: error.field.clone(),
        },
    }));
}

impl EndpointOutRegister for ApiError {
    fn register(components: &mut Components, operation: &mut Operation) {
        let schema = ErrorBody::to_schema(components);
        for (status, what) in [
            ("400", "Invalid request: the message says why, `field` names the field"),
            ("401", "Not signed in"),
            (
                "403",
                "Not allowed: CSRF token missing, a user token, or an address not allowed",
            ),
            ("404", "Not found"),
            (
                "409",
                "Conflict: the name is taken, or the object comes from the profile",
            ),
            ("429", "Too many sign-in attempts; see Retry-After"),
            ("503", "No admin password is set"),
        ] {
            operation.responses.insert(
                status,
                oapi::Response::new(what).add_content("application/json", oapi::Content::new(schema.clone())),
            );
        }
    }
}

/// Reads a JSON body (at most `limit` bytes) as `T`, naming the field at fault.
pub async fn json_body<T: serde::de::DeserializeOwned>(req: &mut Request, limit: usize) -> ApiResult<T> {
    let bytes = req.payload_with_max_size(limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes, or could not be read"),
        )
    })?;
    let bytes = if bytes.is_empty() { &b"{}"[..] } else { &bytes[..] };
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut reader).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid("", format!("the body is not valid JSON: {inner}")).without_field();
        }
        let message = inner.to_string();
        // An unknown field is named by serde's message, not by the path.
        let field = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
            .unwrap_or(path);
        ApiError::invalid(field.clone(), format!("{field}: {message}"))
    })
}

impl ApiError {
    fn without_field(self) -> Self {
        Self { field: None, ..self }
    }
}
