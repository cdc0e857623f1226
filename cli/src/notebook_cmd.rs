//! `detvm notebook`: the web notebook (crate notebook-ui) over this folder's run store.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;

#[derive(Args, Debug)]
pub struct NotebookArgs {
    /// Address to listen on. Anything but loopback needs --token.
    #[arg(long, default_value = notebook_ui::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// A secret every request must carry (at least 16 characters); needed off loopback.
    /// Also read from $DETVM_NOTEBOOK_TOKEN.
    #[arg(long, env = "DETVM_NOTEBOOK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub fn run(args: NotebookArgs) -> ExitCode {
    let config = notebook_ui::Config {
        home: crate::run_cmd::home(),
        listen: args.listen,
        token: args.token,
    };
    if let Err(e) = config.check() {
        eprintln!("detvm notebook: {e}");
        return ExitCode::from(crate::exit::BAD_INPUT);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("detvm notebook: cannot start: {e}");
            return ExitCode::from(crate::exit::INFRASTRUCTURE);
        }
    };
    match runtime.block_on(notebook_ui::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("detvm notebook: {e}");
            ExitCode::from(crate::exit::INFRASTRUCTURE)
        }
    }
}
