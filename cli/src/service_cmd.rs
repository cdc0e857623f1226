//! `detvm push` and `detvm serve`: a compose system and its images sent to a detvm
//! server as one bundle, and the server that checks bundles and runs their campaigns
//! (docs/service.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use detvm_service::bundle::pack::{self, PackInput};
use detvm_service::bundle::{CampaignSettings, Limits};
use detvm_service::client::Client;
use detvm_service::server::jobs::{Jobs, ScaleOut};
use detvm_service::server::{self, Service};
use vmm::backend::BackendKind;

use crate::exit;

/// Where `push` and `ci --server` find the server and its token.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// The detvm server (`detvm serve`).
    #[arg(long, env = "DETVM_SERVER", default_value = "http://127.0.0.1:7878")]
    pub server: String,
    /// The server's token, if it has one.
    #[arg(long, env = "DETVM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// What a campaign is made of, for `push` and `ci`.
#[derive(Args, Debug, Clone)]
pub struct CampaignArgs {
    /// The docker-compose file.
    pub compose: PathBuf,
    #[arg(long)]
    pub seed: Option<u64>,
    /// The run's duration in virtual time (default: the compose file's).
    #[arg(long, value_parser = explorer::compose::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many branches (default 40 unless `--budget` is given).
    #[arg(long)]
    pub branches: Option<u32>,
    /// Stop after this much wall time, e.g. `30m`.
    #[arg(long, value_parser = explorer::compose::parse_duration)]
    pub budget: Option<Duration>,
    /// Virtual time each branch runs before it may be branched again.
    #[arg(long, value_parser = explorer::compose::parse_duration)]
    pub horizon: Option<Duration>,
    /// `KEY=value` for `${KEY}` in the compose file, over `.env`.
    #[arg(long = "var", value_parser = crate::run_cmd::parse_var)]
    pub vars: Vec<(String, String)>,
    /// A fault plan file to send with the system (inside the compose file's folder).
    #[arg(long)]
    pub faults: Option<PathBuf>,
}

impl CampaignArgs {
    pub fn settings(&self) -> CampaignSettings {
        let ms = |d: Duration| d.as_millis() as u64;
        CampaignSettings {
            seed: self.seed,
            duration_ms: self.duration.map(ms),
            branches: self.branches,
            budget_ms: self.budget.map(ms),
            horizon_ms: self.horizon.map(ms),
            vars: self.vars.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct PushArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub campaign: CampaignArgs,
    /// A `docker save` or OCI archive to send whole (for images not in the local store).
    #[arg(long = "image-archive")]
    pub image_archives: Vec<PathBuf>,
    /// Follow the campaign and exit with its code (0 passed, 1 a property failed, …).
    #[arg(long)]
    pub wait: bool,
}

/// Packs and uploads; returns the job id. Messages go to stderr.
pub fn push_bundle(
    client: &Client,
    campaign: &CampaignArgs,
    archives: &[PathBuf],
) -> Result<String, (u8, String)> {
    let input = PackInput {
        compose: campaign.compose.clone(),
        faults: campaign.faults.clone(),
        archives: archives.to_vec(),
        home: crate::run_cmd::home(),
        campaign: campaign.settings(),
    };
    let plan = pack::plan(&input).map_err(|e| (exit::BAD_INPUT, e.to_string()))?;
    let digests = plan.blob_digests();
    let missing = client
        .missing(&digests)
        .map_err(|e| (exit::INFRASTRUCTURE, e.to_string()))?;
    let tmp = tempfile::Builder::new()
        .prefix("detvm-bundle-")
        .suffix(".tar.zst")
        .tempfile()
        .map_err(|e| (exit::INFRASTRUCTURE, e.to_string()))?;
    let manifest = plan
        .write(&missing, tmp.path())
        .map_err(|e| (exit::INFRASTRUCTURE, e.to_string()))?;
    let size = std::fs::metadata(tmp.path()).map_or(0, |m| m.len());
    eprintln!(
        "bundle: {} files, {} archives, {} images ({} of {} blobs sent, the server has the rest), {} bytes",
        manifest.files.len(),
        manifest.archives.len(),
        manifest.images.len(),
        manifest.carried_blobs.len(),
        digests.len(),
        size
    );
    let accepted = client.upload(tmp.path()).map_err(|e| match e {
        detvm_service::client::ClientError::Refused { .. } => (exit::BAD_INPUT, e.to_string()),
        _ => (exit::INFRASTRUCTURE, e.to_string()),
    })?;
    Ok(accepted.job)
}

/// Follows a job to its end; the campaign's exit code and its report.
pub fn wait_job(
    client: &Client,
    job: &str,
) -> Result<detvm_service::server::jobs::Job, (u8, String)> {
    let done = client
        .wait(job, |line| eprintln!("  {line}"))
        .map_err(|e| (exit::INFRASTRUCTURE, e.to_string()))?;
    if let Some(c) = &done.campaign {
        eprintln!("campaign {c}: {}/campaigns/{c}", client.server());
    }
    if let Some(e) = &done.error {
        eprintln!("error: {e}");
    }
    Ok(done)
}

pub fn push(args: PushArgs) -> ExitCode {
    let client = Client::new(&args.server.server, args.server.token.clone());
    let job = match push_bundle(&client, &args.campaign, &args.image_archives) {
        Ok(job) => job,
        Err((code, message)) => {
            eprintln!("detvm push: {message}");
            return ExitCode::from(code);
        }
    };
    println!("job {job}: {}/api/service/jobs/{job}", client.server());
    if !args.wait {
        return ExitCode::SUCCESS;
    }
    match wait_job(&client, &job) {
        Ok(done) => {
            if let Some(report) = &done.report {
                print!("{}", detvm_service::report::table(report));
            }
            ExitCode::from(done.exit_code.unwrap_or(exit::INFRASTRUCTURE))
        }
        Err((code, message)) => {
            eprintln!("detvm push: {message}");
            ExitCode::from(code)
        }
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs --token.
    #[arg(long, default_value = notebook_ui::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// A secret every request must carry (at least 16 characters); needed off loopback.
    #[arg(long, env = "DETVM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Threads each campaign runs its branches on (default: the host's cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    #[arg(long, default_value = "emu", value_parser = crate::run_cmd::parse_backend)]
    pub backend: BackendKind,
    /// Run campaigns' rounds on `detvm worker`s through this PostgreSQL work queue
    /// (`postgres://user@host/db`) instead of this host's threads (docs/scale-out.md).
    #[arg(long, env = "DETVM_QUEUE")]
    pub queue: Option<String>,
    /// Hand campaigns to workers through this object store (`s3://bucket/prefix`,
    /// configured by the `AWS_*` variables, or `file:///shared/path`): each campaign's
    /// project (compose file and the files it names), its images' blobs, inputs and
    /// snapshots, so workers need no folder shared with this host. Needs --queue.
    #[arg(long, env = "DETVM_OBJECTS", requires = "queue")]
    pub objects: Option<String>,
    /// Largest bundle accepted, compressed, e.g. `4GiB`.
    #[arg(long, value_parser = explorer::compose::parse_memory)]
    pub max_upload: Option<u64>,
}

pub fn serve(args: ServeArgs) -> ExitCode {
    let home = crate::run_cmd::home();
    let config = notebook_ui::Config {
        home: home.clone(),
        listen: args.listen,
        token: args.token,
    };
    if let Err(e) = config.check() {
        eprintln!("detvm serve: {e}");
        return ExitCode::from(exit::BAD_INPUT);
    }
    let mut limits = Limits::default();
    if let Some(m) = args.max_upload {
        limits.upload_bytes = m;
    }
    let threads = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let scale = args.queue.clone().map(|queue| ScaleOut {
        queue,
        objects: args.objects.clone(),
    });
    let jobs = Jobs::start(&home, args.backend, threads, scale);
    let service = Service {
        home,
        limits,
        jobs: jobs.clone(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("detvm serve: cannot start: {e}");
            return ExitCode::from(exit::INFRASTRUCTURE);
        }
    };
    let routes = server::routes(service);
    let result = runtime.block_on(notebook_ui::serve_with(
        config,
        Some(("/api/service", routes)),
    ));
    jobs.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("detvm serve: {e}");
            ExitCode::from(exit::INFRASTRUCTURE)
        }
    }
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The PostgreSQL work queue of `detvm serve --queue`.
    #[arg(long, env = "DETVM_QUEUE")]
    pub queue: String,
    /// How long an item stays this worker's without news from it: the worker renews
    /// the lease every third of it while it runs the item, so only a worker that died
    /// or lost the database loses its item to another (whole seconds, at least 1 s).
    #[arg(long, default_value = "60s", value_parser = explorer::compose::parse_duration)]
    pub lease: Duration,
    /// The object store of `detvm serve --objects`: each campaign's project, the images
    /// this host's store lacks, its inputs and parent snapshots are fetched from it into
    /// this host's `.detvm`, branch snapshots uploaded to it. Without it the server's
    /// `.detvm` and compose file must be at the same paths here, and its images loaded.
    #[arg(long, env = "DETVM_OBJECTS")]
    pub objects: Option<String>,
}

/// `detvm worker`: runs campaign branches from the work queue until Ctrl-C. Projects,
/// images and snapshots come through `--objects`, or from campaign folders shared with
/// the server (docs/scale-out.md).
pub fn worker(args: WorkerArgs) -> ExitCode {
    let home = crate::run_cmd::home();
    let name = format!(
        "{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
        std::process::id()
    );
    let flag = crate::run_cmd::interrupt_flag();
    eprintln!("detvm worker {name}: taking items from the queue (Ctrl-C stops)");
    let setup = detvm_service::scale::executor::WorkerSetup {
        queue: &args.queue,
        home: &home,
        name: &name,
        lease: args.lease,
        objects: args.objects.as_deref(),
    };
    match detvm_service::scale::executor::serve_items(&setup, &flag, |line| eprintln!("{line}")) {
        Ok(n) => {
            eprintln!("detvm worker {name}: {n} items done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("detvm worker: {e}");
            ExitCode::from(exit::of_error(&e))
        }
    }
}
