//! What every handler shares: the run store, the job runner, the token.

use std::sync::Arc;

use explorer::store::RunStore;
use rusqlite::Connection;

use crate::db::Db;
use crate::error::AppError;
use crate::jobs::Jobs;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub jobs: Arc<Jobs>,
    /// Every request must carry it when set.
    pub token: Option<Arc<str>>,
}

impl AppState {
    /// Runs `f` with a connection and the run store on a blocking thread: SQLite and
    /// the file system never block the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &RunStore) -> Result<T, AppError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.conn()?;
            let store = RunStore::open(db.home())?;
            f(&mut conn, &store)
        })
        .await?
    }
}
