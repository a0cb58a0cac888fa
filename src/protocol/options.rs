//! Ollama request fields both frontends accept (the OpenAI one as extensions):
//! `format`, `think` and `options`.

use serde_json::{Map, Value};

use crate::ir::{Error, Reasoning, ResponseFormat, Sampling};

/// `format`: `"json"` or a JSON Schema object (`""` and null mean none).
pub fn format(format: Value) -> Result<Option<ResponseFormat>, Error> {
    match format {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) if s == "json" => Ok(Some(ResponseFormat::Json)),
        schema @ Value::Object(_) => Ok(Some(ResponseFormat::JsonSchema {
            name: None,
            schema,
            strict: None,
        })),
        _ => Err(Error::invalid_field(
            "format",
            "format must be \"json\" or a JSON Schema object",
        )),
    }
}

/// `think`: a bool, or a level name.
pub fn think(think: &Value) -> Result<Option<Reasoning>, Error> {
    match think {
        Value::Null => Ok(None),
        Value::Bool(true) => Ok(Some(Reasoning::On)),
        Value::Bool(false) => Ok(Some(Reasoning::Off)),
        Value::String(level) => match Reasoning::from_effort(level) {
            Some(reasoning) if level != "none" && level != "minimal" => Ok(reasoning),
            _ => Err(Error::invalid_field(
                "think",
                format!("invalid think value '{level}': use true, false, low, medium, high or max"),
            )),
        },
        _ => Err(Error::invalid_field(
            "think",
            "think must be true, false or a level name",
        )),
    }
}

/// `options`: the typed ones, and the keys no typed option knows (kept for an Ollama
/// upstream, untouched). A wrong type is a 400 naming `options.KEY`.
pub fn options(options: Map<String, Value>) -> Result<(Sampling, Map<String, Value>), Error> {
    let typed: Sampling = serde_path_to_error::deserialize(Value::Object(options.clone())).map_err(|e| {
        let param = format!("options.{}", e.path());
        Error::invalid_field(&param, format!("invalid '{param}': {}", e.into_inner()))
    })?;
    check_num_predict(typed.max_tokens, "options.num_predict")?;
    let known = serde_json::to_value(&typed).unwrap_or_default();
    let extra = options
        .into_iter()
        .filter(|(key, value)| known.get(key).is_none() && !value.is_null())
        .collect();
    Ok((typed, extra))
}

/// `num_predict` as Ollama takes it: a token count, or -1 (no limit) or -2 (fill the
/// context). Anything lower is a 400 naming `param`.
pub fn check_num_predict(num_predict: Option<i64>, param: &str) -> Result<(), Error> {
    match num_predict {
        Some(n) if n < -2 => Err(Error::invalid_field(
            param,
            format!("'{param}' must be 0 or more, or -1 (no limit) or -2 (fill the context), not {n}"),
        )),
        _ => Ok(()),
    }
}
