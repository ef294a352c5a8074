use std::path::PathBuf;

/// A pipeline or policy file that cannot be used. Every message names the file, and where it
/// can, the line, column and key, and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}:{line}:{column}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: &'static str,
        message: String,
    },
}
