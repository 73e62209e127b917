//! Raw HTTP range reads of hub files (the header of a safetensors file without downloading it):
//! one configured agent with timeouts, a few retries on transport errors and 5xx, redirects
//! followed, the token sent to the hub only, and a server that ignores `Range` handled.

use super::HubSettings;
use crate::error::{Error, Result};
use std::io::Read;
use std::time::Duration;

/// Retries after the first attempt, on transport errors and 5xx answers.
const RETRIES: u32 = 2;

pub struct RangeClient {
    agent: ureq::Agent,
    hub: HubSettings,
}

impl RangeClient {
    pub fn new(hub: &HubSettings) -> Self {
        let agent = ureq::AgentBuilder::new()
            .try_proxy_from_env(true)
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(30))
            .user_agent(concat!("embed-transplant/", env!("CARGO_PKG_VERSION")))
            .build();
        RangeClient {
            agent,
            hub: hub.clone(),
        }
    }

    /// `len` bytes of `url` from `start`; None on 404. `what` names the file in messages. Fewer
    /// bytes come back only when the file is shorter.
    pub fn get(&self, url: &str, what: &str, start: u64, len: u64) -> Result<Option<Vec<u8>>> {
        if len == 0 {
            return Ok(Some(Vec::new()));
        }
        let end = start
            .checked_add(len - 1)
            .ok_or_else(|| Error::Hub(format!("{what}: range {start}+{len} overflows")))?;
        let mut attempt = 0;
        loop {
            match self.try_get(url, what, start, end, len) {
                Err(Retry::Again(e)) if attempt < RETRIES => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(200 << attempt));
                    let _ = e;
                }
                Err(Retry::Again(e)) | Err(Retry::Fatal(e)) => return Err(e),
                Ok(v) => return Ok(v),
            }
        }
    }

    fn try_get(
        &self,
        url: &str,
        what: &str,
        start: u64,
        end: u64,
        len: u64,
    ) -> std::result::Result<Option<Vec<u8>>, Retry> {
        let mut req = self
            .agent
            .get(url)
            .set("Range", &format!("bytes={start}-{end}"));
        if let Some(t) = &self.hub.token {
            req = req.set("Authorization", &format!("Bearer {}", t.expose()));
        }
        let shown = self.hub.endpoint_shown();
        match req.call() {
            Ok(resp) => {
                // A server that ignores Range answers 200 with the whole file: skip to `start`.
                let skip = if resp.status() == 206 { 0 } else { start };
                let mut body = resp.into_reader();
                let mut buf = Vec::new();
                std::io::copy(&mut (&mut body).take(skip), &mut std::io::sink())
                    .and_then(|_| body.take(len).read_to_end(&mut buf))
                    .map_err(|e| {
                        Retry::Again(Error::Hub(
                            self.hub.scrub(&format!("reading {what} from {shown}: {e}")),
                        ))
                    })?;
                Ok(Some(buf))
            }
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(ureq::Error::Status(code, _)) => {
                let e = Error::Hub(format!("hub answered {code} for {what} at {shown}"));
                Err(if code >= 500 {
                    Retry::Again(e)
                } else {
                    Retry::Fatal(e)
                })
            }
            Err(e) => Err(Retry::Again(Error::Hub(self.hub.scrub(&format!(
                "cannot reach the hub at {shown} for {what}: {}",
                e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
            ))))),
        }
    }
}

enum Retry {
    Again(Error),
    Fatal(Error),
}
