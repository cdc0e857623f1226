//! detvm's web notebook (axum). Filled in by the notebook issue.
