//! The Responses API routes (`/v1/responses`): read → decode
//! (`protocol::openai::responses`) → the same gateway call as chat → encode → respond,
//! keeping the answer when asked (`gateway::responses`); and the stored responses' `GET`,
//! `DELETE` and `input_items`.

use salvo::prelude::*;
use serde_json::{Value, json};

use super::request::{Call, read_json};
use super::respond::{write_json, write_openai_error as write_error, write_stream};
use crate::ir::{ChatResponse, Error};
use crate::protocol::openai::responses::decode::{decode_response_request, history, item_references};
use crate::protocol::openai::responses::encode::{ResponseEncoder, sse, to_json};
use crate::protocol::openai::responses::wire::{CreateRequest, Item};

/// `POST /v1/responses`.
#[handler]
pub async fn create(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let result = async {
        let wire: CreateRequest = read_json(req, call.config().max_body_bytes).await?;
        let earlier = match &wire.previous_response_id {
            Some(id) => call
                .gateway
                .kept_response(&call.caller, id)
                .await
                .map_err(|e| Error {
                    param: Some("previous_response_id".into()),
                    ..e
                })?
                .conversation(),
            None => Vec::new(),
        };
        let referenced = call
            .gateway
            .kept_items(&call.caller, &item_references(wire.input.as_ref()))
            .await?;
        let decoded = decode_response_request(wire, history(earlier.clone()), &referenced)?;
        let events = call.chat(&decoded.request).await?;
        Ok::<_, Error>((decoded, earlier, events))
    }
    .await;
    let (decoded, earlier, events) = match result {
        Err(e) => return write_error(res, &e),
        Ok(ok) => ok,
    };
    let keep = call.gateway.keeps_responses(&call.live, decoded.store);
    let input: Vec<Value> = decoded.input.iter().map(to_json).collect();
    let encoder = ResponseEncoder::new(decoded.template);
    let Call {
        gateway, live, caller, ..
    } = call;
    let finished = move |response: Value| async move {
        if keep {
            gateway.keep_response(&live, &caller, response, input, earlier).await;
        }
    };
    if decoded.request.stream {
        write_stream(
            res,
            "text/event-stream",
            sse(
                encoder,
                events,
                Box::new(move |response| Box::pin(finished(to_json(&response)))),
            ),
        );
    } else {
        match ChatResponse::collect(events).await {
            Ok(answer) => {
                let response = to_json(&encoder.whole(answer));
                finished(response.clone()).await;
                write_json(res, 200, &response);
            }
            Err(e) => write_error(res, &e),
        }
    }
}

fn id_of(req: &Request) -> String {
    req.param("id").unwrap_or_default()
}

/// `GET /v1/responses/{id}`.
#[handler]
pub async fn get(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    match call.gateway.kept_response(&call.caller, &id_of(req)).await {
        Ok(kept) => write_json(res, 200, &kept.response),
        Err(e) => write_error(res, &e),
    }
}

/// `DELETE /v1/responses/{id}`.
#[handler]
pub async fn delete(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let id = id_of(req);
    match call.gateway.delete_response(&call.caller, &id).await {
        Ok(()) => write_json(res, 200, &json!({"id": id, "object": "response", "deleted": true})),
        Err(e) => write_error(res, &e),
    }
}

/// Most items one `input_items` page holds, and how many it holds unless told.
const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 20;

/// `GET /v1/responses/{id}/input_items`: OpenAI's list shape, newest first unless
/// `order=asc`, `limit` items after the item `after`.
#[handler]
pub async fn input_items(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let result = async {
        let limit = match req.query::<String>("limit") {
            None => DEFAULT_PAGE,
            Some(text) => text
                .parse()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| Error::invalid_field("limit", format!("limit must be between 1 and {MAX_PAGE}")))?,
        };
        let ascending = match req.query::<String>("order").as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(_) => return Err(Error::invalid_field("order", "order must be 'asc' or 'desc'")),
        };
        let after: Option<String> = req.query("after");
        let kept = call.gateway.kept_response(&call.caller, &id_of(req)).await?;
        let mut items = history(kept.input);
        if !ascending {
            items.reverse();
        }
        let start = match &after {
            Some(after) => {
                items
                    .iter()
                    .position(|item| item.id() == Some(after.as_str()))
                    .ok_or_else(|| Error::invalid_field("after", format!("no input item '{after}' in this response")))?
                    + 1
            }
            None => 0,
        };
        let page: Vec<&Item> = items.iter().skip(start).take(limit).collect();
        let has_more = start + page.len() < items.len();
        Ok(json!({
            "object": "list",
            "data": page,
            "first_id": page.first().and_then(|i| i.id()),
            "last_id": page.last().and_then(|i| i.id()),
            "has_more": has_more,
        }))
    }
    .await;
    match result {
        Ok(list) => write_json(res, 200, &list),
        Err(e) => write_error(res, &e),
    }
}
