//! `detvm image …`: load, list, remove and build container images (see docs/images.md).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use detvm_images::build::{self, BuildOptions, Debootstrap, FileSpec, Spec};
use detvm_images::Store;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Import images from OCI layout folders, OCI archives or `docker save` archives.
    Load {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Name the (single) image `name:tag` instead of the archive's names.
        #[arg(long)]
        tag: Option<String>,
    },
    /// List the images in the store.
    Ls,
    /// Remove an image name, or a whole image by digest (unused blobs are deleted).
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Show an image's digest, layers and run config as JSON.
    Inspect { reference: String },
    /// Print the path of an image's guest root filesystem (a squashfs), building it if needed.
    Rootfs { reference: String },
    /// Build an image without Docker, from a TOML spec or from options.
    Build(Box<BuildArgs>),
}

#[derive(Args)]
pub struct BuildArgs {
    /// An image spec (TOML), e.g. images/examples/etcd/image.toml; the options below override it.
    spec: Option<PathBuf>,
    /// Base the image on busybox-static plus `--file`s (the default without --debootstrap).
    #[arg(long, conflicts_with = "debootstrap")]
    from_files: bool,
    /// Base the image on Debian SUITE (debootstrap --variant=minbase).
    #[arg(long, value_name = "SUITE")]
    debootstrap: Option<String>,
    /// A Debian package to install (with --debootstrap); repeat for more.
    #[arg(long = "package", value_name = "PACKAGE")]
    packages: Vec<String>,
    /// The Debian mirror (default: the one the host's apt uses).
    #[arg(long)]
    mirror: Option<String>,
    /// The image name, `name:tag`.
    #[arg(long)]
    tag: Option<String>,
    /// Add a host file: SRC:DEST[:OCTAL-MODE]; repeat for more.
    #[arg(long = "file", value_name = "SRC:DEST[:MODE]")]
    files: Vec<String>,
    /// Entrypoint word; repeat for more words.
    #[arg(long = "entrypoint", allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// Cmd word; repeat for more words.
    #[arg(long = "cmd", allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// KEY=value; repeat for more.
    #[arg(long = "env")]
    env: Vec<String>,
    #[arg(long)]
    workdir: Option<String>,
    #[arg(long)]
    user: Option<String>,
    /// PORT/PROTO, e.g. 2379/tcp; repeat for more.
    #[arg(long = "expose")]
    expose: Vec<String>,
    /// Also write the image: a folder (OCI layout) or FILE.tar (OCI archive).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Do not load the built image into the store.
    #[arg(long)]
    no_load: bool,
}

pub fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    let root = Store::default_root();
    let store = || {
        Store::open(&root).with_context(|| format!("opening the image store {}", root.display()))
    };
    match cmd {
        ImageCommand::Load { files, tag } => {
            let store = store()?;
            for file in files {
                for image in store.load_as(&file, tag.as_deref())? {
                    let names = if image.names.is_empty() {
                        "(no name)".into()
                    } else {
                        image.names.join(", ")
                    };
                    println!("loaded {names} {}", image.digest);
                }
            }
        }
        ImageCommand::Ls => {
            println!(
                "{:<40} {:<12} {:>7} {:>10}",
                "NAME", "DIGEST", "LAYERS", "SIZE"
            );
            for image in store()?.list()? {
                let short = image.digest.get(7..19).unwrap_or(&image.digest);
                let names = if image.names.is_empty() {
                    vec!["<none>".to_string()]
                } else {
                    image.names.clone()
                };
                for name in names {
                    println!(
                        "{name:<40} {short:<12} {:>7} {:>10}",
                        image.layers.len(),
                        human(image.size())
                    );
                }
            }
        }
        ImageCommand::Rm { references } => {
            let store = store()?;
            for r in references {
                for removed in store.remove(&r)? {
                    println!("removed {removed}");
                }
            }
        }
        ImageCommand::Inspect { reference } => {
            let image = store()?.resolve(&reference)?;
            println!("{}", image.to_json());
        }
        ImageCommand::Rootfs { reference } => {
            let store = store()?;
            let image = store.resolve(&reference)?;
            println!("{}", store.rootfs(&image)?.display());
        }
        ImageCommand::Build(args) => build_cmd(*args, &root)?,
    }
    Ok(())
}

fn build_cmd(args: BuildArgs, root: &std::path::Path) -> anyhow::Result<()> {
    let mut spec = match &args.spec {
        Some(path) => Spec::from_file(path)?,
        None => Spec {
            base_dir: PathBuf::from("."),
            ..Default::default()
        },
    };
    if let Some(tag) = args.tag {
        spec.name = tag;
    }
    if spec.name.is_empty() {
        bail!("give the image a name: --tag name:tag (or `name` in the spec)");
    }
    if let Some(suite) = args.debootstrap {
        spec.debootstrap = Some(Debootstrap {
            suite,
            packages: args.packages,
            mirror: args.mirror,
        });
    } else if args.from_files {
        spec.debootstrap = None;
    }
    for f in &args.files {
        let mut parts = f.splitn(3, ':');
        let (Some(src), Some(dest)) = (parts.next(), parts.next()) else {
            bail!("--file {f:?}: expected SRC:DEST[:MODE]")
        };
        let mode = parts
            .next()
            .map(|m| u32::from_str_radix(m, 8))
            .transpose()
            .with_context(|| format!("--file {f:?}: MODE is octal, e.g. 755"))?;
        let src = std::path::absolute(src)?;
        spec.files.push(FileSpec {
            src,
            dest: dest.into(),
            mode,
        });
    }
    let c = &mut spec.config;
    if !args.entrypoint.is_empty() {
        c.entrypoint = args.entrypoint;
    }
    if !args.cmd.is_empty() {
        c.cmd = args.cmd;
    }
    c.env.extend(args.env);
    c.working_dir = args.workdir.unwrap_or(std::mem::take(&mut c.working_dir));
    c.user = args.user.unwrap_or(std::mem::take(&mut c.user));
    c.exposed_ports.extend(args.expose);
    c.exposed_ports.sort();
    c.exposed_ports.dedup();

    let built = build::build(
        &spec,
        &BuildOptions {
            cache: explorer::paths::cache_dir(),
        },
    )?;
    if let Some(out) = &args.output {
        let digest = built.write(out)?;
        println!("wrote {} {digest} to {}", built.name, out.display());
    }
    if !args.no_load {
        for image in built.load_into(&Store::open(root)?)? {
            println!("loaded {} {}", image.names.join(", "), image.digest);
        }
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / (1u64 << 10) as f64),
        b => format!("{b} B"),
    }
}

/// The error and its causes on one line, skipping causes the message above already quotes
/// (the image errors name their cause in their own text).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if !text.contains(&msg) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&msg);
        }
    }
    text
}
