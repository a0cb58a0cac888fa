//! The `diglot` command: serve (the default), check-config, and the store's commands.

use clap::{Args, Parser, Subcommand};
use diglot::config::{Config, Overrides, Source, UpstreamKind, UpstreamOverrides};

/// jemalloc, purging freed pages from background threads: after a burst of streams glibc
/// malloc kept their memory (its per-thread arenas fragment and are seldom trimmed), so
/// an idle gateway stayed at its peak.
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "diglot",
    version,
    about = "A bilingual LLM gateway: OpenAI and Ollama APIs in front, Ollama and OpenAI-compatible servers behind."
)]
struct Cli {
    /// A profile: a name (profiles/NAME.toml in this directory, else the built-in one:
    /// default, kerlig, gateway) or a path to a TOML file; also says whose store the
    /// token and usage commands use.
    #[arg(long, short, env = "DIGLOT_PROFILE", global = true)]
    profile: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What the server is run with, given before or after `serve` / `check-config`.
#[derive(Args, Default, Clone)]
struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:3000 or :11434 (every interface).
    #[arg(long)]
    listen: Option<String>,
    /// An Ollama upstream's base URL.
    #[arg(long, env = "OLLAMA_URL", conflicts_with = "target")]
    upstream: Option<String>,
    /// An OpenAI-compatible upstream's base URL, with or without /v1 (vLLM, llama.cpp,
    /// LiteLLM, OpenRouter, OpenAI).
    #[arg(long)]
    target: Option<String>,
    /// The upstream's API key (sent as a bearer token, never logged).
    #[arg(long)]
    api_key: Option<String>,
    /// Log requests, upstream payloads and chunks (secrets redacted).
    #[arg(long)]
    debug: bool,
}

impl ServeArgs {
    /// These flags, each taken from `later` when given there.
    fn or(self, later: ServeArgs) -> Self {
        Self {
            listen: later.listen.or(self.listen),
            upstream: later.upstream.or(self.upstream),
            target: later.target.or(self.target),
            api_key: later.api_key.or(self.api_key),
            debug: self.debug || later.debug,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Load the configuration (`--profile FILE` to check an edit before saving it in
    /// place), report problems, and print the result (secrets redacted).
    CheckConfig(ServeArgs),
    /// Manage API tokens in the store (`store.data_dir` of the profile).
    #[command(subcommand)]
    Token(diglot::cli::TokenCommand),
    /// The admin API's password (kept in the store as an argon2id hash).
    #[command(subcommand)]
    Admin(diglot::cli::AdminCommand),
    /// Apply the store's migrations (its tables, for a new PostgreSQL database) and say
    /// which schema version it is at.
    Migrate,
    /// Copy a whole store into another (`store copy --from sqlite:PATH --to postgres://...`).
    #[command(subcommand)]
    Store(diglot::cli::StoreCommand),
    /// Usage per token per day, from the store.
    Usage {
        /// How many days back.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Print JSON rather than a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running server's `/health` (on the profile's `listen` address) and exit 0
    /// when it answers 200: a container health check that needs no curl.
    HealthCheck {
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (serve, command) = match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(later) => (cli.serve.or(later), Command::Serve(ServeArgs::default())),
        Command::CheckConfig(later) => (cli.serve.or(later), Command::CheckConfig(ServeArgs::default())),
        other => (cli.serve, other),
    };
    let overrides = Overrides {
        listen: serve.listen.clone(),
        debug: serve.debug.then_some(true),
        upstream: UpstreamOverrides {
            kind: serve.target.is_some().then_some(UpstreamKind::Openai),
            url: serve.target.clone().or(serve.upstream.clone()),
            api_key: serve.api_key.clone(),
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
    // Serving sets up traces too, inside its runtime.
    let _logs =
        (!matches!(command, Command::Serve(_))).then(|| diglot::telemetry::init_logs(&config.log, config.debug));
    if !matches!(command, Command::Serve(_)) {
        warn_unknown_variables();
    }
    match command {
        Command::CheckConfig(_) => {
            // Everything the gateway would build from it, without starting anything.
            if let Err(e) = diglot::gateway::Snapshot::check(&config) {
                eprintln!("diglot: configuration error: {e}");
                return std::process::ExitCode::from(2);
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&config.redacted()).unwrap_or_default()
            );
            std::process::ExitCode::SUCCESS
        }
        Command::Serve(_) => run(config, source),
        Command::Token(command) => with_store(&config, async |store| diglot::cli::token(store, &config, command).await),
        Command::Admin(command) => with_store(&config, async |store| diglot::cli::admin(store, &config, command).await),
        Command::Usage { days, json } => with_store(&config, async |store| diglot::cli::usage(store, days, json).await),
        Command::Migrate => with_store(&config, async |store| diglot::cli::migrated(store, &config.store).await),
        Command::Store(command) => block_on(diglot::cli::store(command)),
        Command::HealthCheck { timeout } => health_check(&config, timeout),
    }
}

/// Each `DIGLOT_*` variable that names no setting, as a warning in the log.
fn warn_unknown_variables() {
    for warning in diglot::config::unknown_variables() {
        tracing::warn!("{warning}");
    }
}

/// `diglot health-check`: GET /health on the listen address (the unspecified address
/// read as loopback), exit 0 on 200.
fn health_check(config: &Config, timeout: u64) -> std::process::ExitCode {
    let mut addr = match config.listen_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("diglot: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{addr}/health");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    let answer = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(timeout))
            .build()
            .map_err(|e| e.to_string())?;
        let res = client.get(&url).send().await.map_err(|e| e.to_string())?;
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        Ok::<_, String>((status, body))
    });
    match answer {
        Ok((status, body)) if status.is_success() => {
            println!("{url}: {status} {body}");
            std::process::ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("diglot: {url} answered {status}: {body}");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("diglot: {url} did not answer: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn with_store(
    config: &Config,
    run: impl AsyncFnOnce(&dyn diglot::store::Store) -> Result<String, String>,
) -> std::process::ExitCode {
    if matches!(config.store.location(), Ok(diglot::config::StoreLocation::None)) {
        eprintln!("diglot: store.data_dir is empty and store.url is not set, so there is no store: set either");
        return std::process::ExitCode::from(2);
    }
    // Said every time, so a store in an unexpected place is noticed at once.
    eprintln!("diglot: store {}", config.store.describe());
    let runtime = command_runtime();
    let store = match runtime.block_on(diglot::store::open(&config.store)) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("diglot: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    finish(runtime.block_on(run(store.as_ref())))
}

fn command_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts")
}

/// Runs a command's future to its end.
fn block_on(command: impl Future<Output = Result<String, String>>) -> std::process::ExitCode {
    finish(command_runtime().block_on(command))
}

/// Prints a command's output (exit 0) or its error (exit 1).
fn finish(result: Result<String, String>) -> std::process::ExitCode {
    match result {
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
    // Requests are served on the workers' own runtimes (`http::Workers`); what runs here
    // (start-up, usage writes, health checks, reloads, signals) is light and waits on I/O,
    // so the main thread drives it: a pool of one thread per core would sit idle, each
    // thread with its own stack and allocator arena.
    let runtime = tokio::runtime::Builder::new_current_thread()
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
        warn_unknown_variables();
        tracing::info!(profile = %source.describe(), "configuration read");
        if matches!(config.store.location(), Ok(diglot::config::StoreLocation::None)) {
            tracing::info!("no store (store.data_dir is empty): tokens only from the profile, no usage records");
        } else {
            tracing::info!(store = %config.store.describe(), "store");
        }
        let addr = match config.listen_addr() {
            Ok(addr) => addr,
            Err(e) => {
                eprintln!("diglot: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        let workers = config.server.worker_count();
        let listeners = match diglot::http::bind(addr, workers).await {
            Ok(listeners) => listeners,
            Err(e) => {
                eprintln!("diglot: cannot listen on {addr}: {e}");
                return std::process::ExitCode::from(1);
            }
        };
        for channel in config.channels() {
            tracing::info!(channel = %channel.name, kind = ?channel.kind, url = %diglot::protocol::upstream::shown_url(&channel.url), models = ?channel.models, priority = channel.priority, weight = channel.weight, "channel");
        }
        tracing::info!(%addr, workers, "diglot listening");
        let telemetry_config = config.telemetry.clone();
        let app = match diglot::http::App::new(config, Some(source)).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("diglot: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        tokio::spawn(app.gateway.clone().check_channels_at_start());
        if diglot::telemetry::tracing_on() {
            let endpoint = diglot::protocol::upstream::shown_url(&config_endpoint(&telemetry_config));
            tracing::info!(%endpoint, "exporting traces over OTLP");
        }
        let served = diglot::http::serve(listeners, app).await;
        telemetry.shutdown().await;
        match served {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("diglot: cannot start serving: {e}");
                std::process::ExitCode::from(1)
            }
        }
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
