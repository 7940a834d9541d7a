//! The `kyc-service` binary: reads config, sets up telemetry, and serves (or runs a subcommand).

use std::process::ExitCode;

use clap::Parser;
use kyc_service::app::{self, AppState};
use kyc_service::cli::{self, Cli, Command};
use kyc_service::config::Settings;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(&cli.config, std::env::vars()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kyc-service: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kyc-service: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings).await,
            other => match cli::run(settings, other).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("kyc-service: {e}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

async fn serve(settings: Settings) -> ExitCode {
    let _guard = match kyc_service::telemetry::init(&settings) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("kyc-service: cannot set up logging: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listen = settings.listen;
    if settings.dev_mode {
        tracing::warn!(
            "dev mode (gin_mode: debug): placeholder secrets are accepted and the demo client exists"
        );
    }
    let state = match AppState::new(settings) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = state.prepare().await {
        tracing::error!("{e}");
        return ExitCode::FAILURE;
    }
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%listen, "cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%listen, "kyc-service listening");
    match app::serve(listener, state, app::shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
