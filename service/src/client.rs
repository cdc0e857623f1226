//! The client side of `detvm push` and `detvm ci --server`: asks which blobs the server
//! lacks, uploads a bundle, follows a job.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::bundle::MEDIA_TYPE;
use crate::server::jobs::Job;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error (a refused bundle, a bad token, …).
    #[error("{status}: {message}")]
    Refused { status: u16, message: String },
    #[error("cannot reach {server}: {message}")]
    Transport { server: String, message: String },
}

pub struct Client {
    server: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// Accepted by the server: the job that will run the campaign.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Accepted {
    pub job: String,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> Client {
        Client {
            server: server.trim_end_matches('/').to_string(),
            token,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(10))
                .build(),
        }
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let mut r = self
            .agent
            .request(method, &format!("{}/api/service{path}", self.server))
            .set("X-Detvm", "1");
        if let Some(t) = &self.token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        r
    }

    fn answer<T: DeserializeOwned>(
        &self,
        result: Result<ureq::Response, ureq::Error>,
    ) -> Result<T, ClientError> {
        match result {
            Ok(response) => response.into_json().map_err(|e| ClientError::Transport {
                server: self.server.clone(),
                message: format!("bad answer: {e}"),
            }),
            Err(ureq::Error::Status(status, response)) => {
                let text = response.into_string().unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(String::from))
                    .unwrap_or(text);
                Err(ClientError::Refused { status, message })
            }
            Err(e) => Err(ClientError::Transport {
                server: self.server.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// The digests of `digests` the server does not have.
    pub fn missing(&self, digests: &[String]) -> Result<BTreeSet<String>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Missing {
            missing: Vec<String>,
        }
        let r = self
            .request("POST", "/missing")
            .send_json(serde_json::json!({ "digests": digests }));
        let m: Missing = self.answer(r)?;
        Ok(m.missing.into_iter().collect())
    }

    /// Uploads a bundle file; the server checks it whole before it answers.
    pub fn upload(&self, bundle: &Path) -> Result<Accepted, ClientError> {
        let file = std::fs::File::open(bundle).map_err(|e| ClientError::Transport {
            server: self.server.clone(),
            message: format!("{}: {e}", bundle.display()),
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let r = self
            .request("POST", "/bundles")
            .set("Content-Type", MEDIA_TYPE)
            .set("Content-Length", &len.to_string())
            .send(file);
        self.answer(r)
    }

    /// Every job the server knows, without logs and reports.
    pub fn jobs(&self) -> Result<Vec<Job>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Jobs {
            jobs: Vec<Job>,
        }
        let r = self.request("GET", "/jobs").call();
        let all: Jobs = self.answer(r)?;
        Ok(all.jobs)
    }

    pub fn job(&self, id: &str) -> Result<Job, ClientError> {
        let r = self.request("GET", &format!("/jobs/{id}")).call();
        self.answer(r)
    }

    /// Polls the job until it is done, handing each new log line to `line`.
    pub fn wait(&self, id: &str, mut line: impl FnMut(&str)) -> Result<Job, ClientError> {
        let mut shown = 0;
        loop {
            let job = self.job(id)?;
            for l in job.log.iter().skip(shown) {
                line(l);
            }
            shown = job.log.len();
            if job.status.done() {
                return Ok(job);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
