//! The `axpo demo` task (placeholder until the demo issue lands).

/// Arguments of `axpo demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {}

/// Runs the demo.
///
/// # Errors
/// Never, for now.
pub fn run(_args: &DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    println!("axpo demo: not implemented yet");
    Ok(())
}
