//! OpenAI's `/v1` routes: read → decode (`protocol::openai::decode`) → gateway → encode
//! (`protocol::openai::encode`) → respond.

use futures::{StreamExt, future, stream};
use salvo::prelude::*;
use serde_json::json;

use super::request::{Call, read_json};
use super::respond::{write_json, write_openai_error as write_error, write_stream};
use crate::ir::{ChatRequest, ChatResponse, ChatStream, Error, Input};
use crate::protocol::openai::decode::{decode_chat, decode_completion, decode_embedding, wants_base64};
use crate::protocol::openai::encode::{self, ChunkEncoder, Kind, sse};
use crate::protocol::openai::wire;

/// `GET /v1`: a quick "is this an OpenAI-compatible server" probe.
#[handler]
pub async fn connection_test(res: &mut Response) {
    write_json(res, 200, &json!({"object": "diglot", "status": "ok"}));
}

#[handler]
pub async fn chat_completions(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let result = async {
        let wire: wire::ChatCompletionRequest = read_json(req, call.config().max_body_bytes).await?;
        let include_usage = wire
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let request = decode_chat(wire)?;
        let streams = start(&call, std::iter::repeat_n(&request, request.n as usize)).await?;
        Ok::<_, Error>((request, include_usage, streams))
    }
    .await;
    let (request, include_usage, streams) = match result {
        Err(e) => return write_error(res, &e),
        Ok(ok) => ok,
    };
    let encoder = ChunkEncoder::new(
        &call.config().openai,
        &request.model,
        Kind::Chat,
        include_usage,
        streams.len(),
    );
    if request.stream {
        write_stream(res, "text/event-stream", sse(encoder, streams));
    } else {
        match collect(streams).await {
            Ok(answers) => write_json(res, 200, &encoder.chat_completion(answers, request.logprobs)),
            Err(e) => write_error(res, &e),
        }
    }
}

/// Starts every requested answer at once; the first failure cancels the others.
async fn start<'a>(call: &Call, requests: impl IntoIterator<Item = &'a ChatRequest>) -> Result<Vec<ChatStream>, Error> {
    call.chat_all(requests).await
}

async fn collect(streams: Vec<ChatStream>) -> Result<Vec<ChatResponse>, Error> {
    future::try_join_all(streams.into_iter().map(ChatResponse::collect)).await
}

/// Legacy `/v1/completions`: one answer per prompt and per `n`, `echo` put before each.
#[handler]
pub async fn completions(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let result = async {
        let wire: wire::CompletionRequest = read_json(req, call.config().max_body_bytes).await?;
        let include_usage = wire
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let echo = wire.echo.unwrap_or(false);
        let requests = decode_completion(wire)?;
        let streams = start(&call, &requests).await?;
        Ok::<_, Error>((requests, include_usage, echo, streams))
    }
    .await;
    let (requests, include_usage, echo, streams) = match result {
        Err(e) => return write_error(res, &e),
        Ok(ok) => ok,
    };
    let first = &requests[0];
    let mut encoder = ChunkEncoder::new(
        &call.config().openai,
        &first.model,
        Kind::Completion,
        include_usage,
        streams.len(),
    );
    let prompts: Vec<String> = requests
        .iter()
        .map(|r| match &r.input {
            Input::Prompt(p) if echo => p.text.clone(),
            _ => String::new(),
        })
        .collect();
    if first.stream {
        let echoes: Vec<_> = prompts
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .filter_map(|(i, p)| encoder.encode(i as u32, crate::ir::ChatEvent::Text(p)))
            .collect();
        write_stream(
            res,
            "text/event-stream",
            stream::iter(echoes.into_iter().map(Ok)).chain(sse(encoder, streams)),
        );
    } else {
        match collect(streams).await {
            Ok(mut answers) => {
                for (answer, prompt) in answers.iter_mut().zip(prompts) {
                    answer.text.insert_str(0, &prompt);
                }
                write_json(res, 200, &encoder.completion(answers, first.logprobs))
            }
            Err(e) => write_error(res, &e),
        }
    }
}

#[handler]
pub async fn embeddings(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    let result = async {
        let wire: wire::EmbeddingRequest = read_json(req, call.config().max_body_bytes).await?;
        let base64 = wants_base64(wire.encoding_format.as_deref())?;
        let request = decode_embedding(wire)?;
        let answer = call.embed(&request).await?;
        Ok((request.model, base64, answer))
    }
    .await;
    match result {
        Err(e) => write_error(res, &e),
        Ok((model, base64, answer)) => write_json(res, 200, &encode::embedding_response(model, answer, base64)),
    }
}

/// OpenAI's model list, or Anthropic's for a request that carries `anthropic-version`.
#[handler]
pub async fn list_models(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let call = Call::of(depot);
    if super::anthropic::is_anthropic(req) {
        return super::anthropic::list_models(&call, res).await;
    }
    match call.models().await {
        Ok(models) => write_json(res, 200, &encode::model_list(&models)),
        Err(e) => write_error(res, &e),
    }
}

#[handler]
pub async fn get_model(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let id: String = req.param("id").unwrap_or_default();
    if super::anthropic::is_anthropic(req) {
        return super::anthropic::get_model(&Call::of(depot), id, res).await;
    }
    match Call::of(depot).model(&id).await {
        Ok(card) => write_json(
            res,
            200,
            &wire::Model {
                id,
                ..encode::model_entry(&card)
            },
        ),
        Err(e) => write_error(res, &e),
    }
}
