//! The `diglot` command: serve (the default) and check-config.

use clap::{Parser, Subcommand};
use diglot::config::{Config, Overrides, Source, UpstreamKind, UpstreamOverrides};

#[derive(Parser)]
#[command(
    name = "diglot",
    version,
    about = "A bilingual LLM gateway: OpenAI and Ollama APIs in front, Ollama and OpenAI-compatible servers behind."
)]
struct Cli {
    /// A profile name (profiles/NAME.toml) or a path to a TOML file.
    #[arg(long, short, env = "DIGLOT_PROFILE", global = true)]
    profile: Option<String>,
    /// Address to listen on, e.g. 127.0.0.1:3000 or :11434 (every interface).
    #[arg(long, global = true)]
    listen: Option<String>,
    /// An Ollama upstream's base URL.
    #[arg(long, env = "OLLAMA_URL", global = true, conflicts_with = "target")]
    upstream: Option<String>,
    /// An OpenAI-compatible upstream's base URL, with or without /v1 (vLLM, llama.cpp,
    /// LiteLLM, OpenRouter, OpenAI).
    #[arg(long, global = true)]
    target: Option<String>,
    /// The upstream's API key (sent as a bearer token, never logged).
    #[arg(long, global = true)]
    api_key: Option<String>,
    /// Log requests, upstream payloads and chunks (secrets redacted).
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Load the configuration (`--profile FILE` to check an edit before saving it in
    /// place), report problems, and print the result (secrets redacted).
    CheckConfig,
    /// Manage API tokens in the store (`store.data_dir` of the profile).
    #[command(subcommand)]
    Token(diglot::cli::TokenCommand),
    /// Usage per token per day, from the store.
    Usage {
        /// How many days back.
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen.clone(),
        debug: cli.debug.then_some(true),
        upstream: UpstreamOverrides {
            kind: cli.target.is_some().then_some(UpstreamKind::Openai),
            url: cli.target.clone().or(cli.upstream.clone()),
            api_key: cli.api_key.clone(),
        },
    };
    let source = Source {
        profile: cli.profile.clone(),
        overrides,
    };
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("diglot: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    // Serving sets up traces too, inside its runtime.
    let _logs = (!matches!(command, Command::Serve)).then(|| diglot::telemetry::init_logs(&config.log, config.debug));
    match command {
        Command::CheckConfig => {
            // Everything the gateway would build from it, without starting anything.
            if let Err(e) = diglot::gateway::Snapshot::check(&config) {
                eprintln!("diglot: configuration error: {e}");
                return std::process::ExitCode::from(2);
            }
            let shown = Config {
                upstream: config.upstream.redacted(),
                channels: config.channels.iter().map(|c| c.redacted()).collect(),
                metrics: config.metrics.redacted(),
                telemetry: config.telemetry.redacted(),
                ..config
            };
            println!("{}", serde_json::to_string_pretty(&shown).unwrap_or_default());
            std::process::ExitCode::SUCCESS
        }
        Command::Serve => run(config, source),
        Command::Token(command) => with_store(&config, async |store| diglot::cli::token(store, command).await),
        Command::Usage { days, json } => with_store(&config, async |store| diglot::cli::usage(store, days, json).await),
    }
}

fn with_store(
    config: &Config,
    run: impl AsyncFnOnce(&dyn diglot::store::Store) -> Result<String, String>,
) -> std::process::ExitCode {
    let store = match diglot::store::open(&config.store.data_dir) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("diglot: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    match runtime.block_on(run(store.as_ref())) {
        Ok(out) => {
            print!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("diglot: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run(config: Config, source: Source) -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    runtime.block_on(async move {
        let telemetry = match diglot::telemetry::init(&config.log, &config.telemetry, config.debug) {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("diglot: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        let addr = match config.listen_addr() {
            Ok(addr) => addr,
            Err(e) => {
                eprintln!("diglot: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        let acceptor = match diglot::http::bind(addr).await {
            Ok(acceptor) => acceptor,
            Err(e) => {
                eprintln!("diglot: cannot listen on {addr}: {e}");
                return std::process::ExitCode::from(1);
            }
        };
        for channel in config.channels() {
            tracing::info!(channel = %channel.name, kind = ?channel.kind, url = %diglot::protocol::upstream::shown_url(&channel.url), models = ?channel.models, priority = channel.priority, weight = channel.weight, "channel");
        }
        tracing::info!(%addr, "diglot listening");
        let telemetry_config = config.telemetry.clone();
        let app = match diglot::http::App::new(config, Some(source)).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("diglot: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        if !app.gateway.snapshot().auth.required() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "AUTHENTICATION IS OFF on an address other machines can reach: anyone there can use \
                 every upstream. Create a token (`diglot token create --name NAME`), set API_TOKEN, or \
                 set [auth] keys_file; or listen on 127.0.0.1."
            );
        }
        if diglot::telemetry::tracing_on() {
            let endpoint = diglot::protocol::upstream::shown_url(&config_endpoint(&telemetry_config));
            tracing::info!(%endpoint, "exporting traces over OTLP");
        }
        diglot::http::serve(acceptor, app).await;
        telemetry.shutdown().await;
        std::process::ExitCode::SUCCESS
    })
}

/// Where traces go, as configured (the standard variables when the profile says nothing).
fn config_endpoint(telemetry: &diglot::config::TelemetryConfig) -> String {
    if !telemetry.otlp_endpoint.is_empty() {
        return telemetry.otlp_endpoint.clone();
    }
    std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .unwrap_or_default()
}
