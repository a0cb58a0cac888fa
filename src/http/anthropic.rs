//! Anthropic's Messages routes (`/v1/messages`, `/v1/messages/count_tokens`, and the model
//! list in Anthropic's shape): read → decode (`protocol::anthropic::decode`) → gateway →
//! encode (`protocol::anthropic::encode`) → respond.

use salvo::prelude::*;

use super::request::{Call, read_json};
use super::respond::{write_error, write_json, write_stream};
use crate::ir::{ChatResponse, Error};
use crate::protocol::Frontend;
use crate::protocol::anthropic::decode::{decode_count_tokens, decode_messages};
use crate::protocol::anthropic::encode::{self, EventEncoder, sse};
use crate::protocol::anthropic::wire;

/// Says whether count_tokens' number is the upstream's own count or diglot's estimate.
const TOKEN_COUNT_HEADER: &str = "x-diglot-token-count";

fn fail(res: &mut Response, error: &Error) {
    write_error(res, Frontend::Anthropic, error, "");
}

#[handler]
pub async fn messages(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let result = async {
        let wire: wire::MessagesRequest = read_json(req, call.config().max_body_bytes).await?;
        let request = decode_messages(wire)?;
        let events = call.chat(&request).await?;
        Ok::<_, Error>((request, events))
    }
    .await;
    let (request, events) = match result {
        Err(e) => return fail(res, &e),
        Ok(ok) => ok,
    };
    if request.stream {
        write_stream(res, "text/event-stream", sse(EventEncoder::new(&request.model), events));
    } else {
        match ChatResponse::collect(events).await {
            Ok(answer) => write_json(res, 200, &encode::message(&request.model, answer)),
            Err(e) => fail(res, &e),
        }
    }
}

#[handler]
pub async fn count_tokens(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let result = async {
        let wire: wire::MessagesRequest = read_json(req, call.config().max_body_bytes).await?;
        call.count_tokens(&decode_count_tokens(wire)?).await
    }
    .await;
    match result {
        Err(e) => fail(res, &e),
        Ok((input_tokens, counted)) => {
            let source = if counted { "upstream" } else { "estimate" };
            let _ = res.add_header(TOKEN_COUNT_HEADER, source, true);
            write_json(res, 200, &wire::TokenCount { input_tokens });
        }
    }
}

/// Whether a request comes from an Anthropic client, which sends `anthropic-version`.
pub fn is_anthropic(req: &Request) -> bool {
    req.headers().contains_key("anthropic-version")
}

/// `GET /v1/models` for Anthropic clients.
pub async fn list_models(call: &Call, res: &mut Response) {
    match call.models().await {
        Ok(models) => write_json(res, 200, &encode::model_list(&models)),
        Err(e) => fail(res, &e),
    }
}

/// `GET /v1/models/{id}` for Anthropic clients.
pub async fn get_model(call: &Call, id: String, res: &mut Response) {
    match call.model(&id).await {
        Ok(card) => write_json(
            res,
            200,
            &wire::ModelInfo {
                id,
                ..encode::model_info(&card)
            },
        ),
        Err(e) => fail(res, &e),
    }
}
