//! detvm's guest agent. Filled in by the agent issue.

fn main() {
    eprintln!("detvm guest-agent: not implemented yet");
    std::process::exit(1);
}
