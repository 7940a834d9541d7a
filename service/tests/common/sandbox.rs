//! The vendor sandbox, in-process on an ephemeral port, with fixtures for the seed's person
//! (张三, 11010519491231002X) and helpers for its admin API.

use serde_json::Value;

pub struct Sandbox {
    pub url: String,
    fixtures: kyc_sandbox::Fixtures,
    http: reqwest::Client,
    _running: kyc_sandbox::RunningSandbox,
}

impl Sandbox {
    pub async fn start() -> Self {
        let running = kyc_sandbox::spawn(kyc_sandbox::Config::default())
            .await
            .expect("sandbox starts");
        let person =
            kyc_sandbox::Person::new("张三", "11010519491231002X", None).expect("valid person");
        Self {
            url: running.url(),
            fixtures: kyc_sandbox::fixtures(&person),
            http: reqwest::Client::new(),
            _running: running,
        }
    }

    /// `KYC__…` overrides that point the service's three vendors at this sandbox.
    pub fn vendor_overrides(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KYC__THIRD_PARTY__OCR_SERVICE__URL", self.url.clone()),
            ("KYC__THIRD_PARTY__FACE_SERVICE__URL", self.url.clone()),
            ("KYC__THIRD_PARTY__LIVENESS_SERVICE__URL", self.url.clone()),
        ]
    }

    pub fn fixture(&self, file: &str) -> Vec<u8> {
        let f = &self.fixtures;
        match file {
            "idcard.jpg" => f.idcard.clone(),
            "idcard_photocopy.jpg" => f.idcard_photocopy.clone(),
            "face.jpg" => f.face.clone(),
            "face_other.jpg" => f.face_other.clone(),
            other => panic!("no fixture {other}"),
        }
    }

    /// `n` JPEG frames of the seed's person acting out `action` (the protocol's name for it).
    pub fn liveness_frames(&self, action: &str, n: usize) -> Vec<Vec<u8>> {
        let person =
            kyc_sandbox::Person::new("张三", "11010519491231002X", None).expect("valid person");
        let action: kyc_sandbox::Action =
            serde_json::from_value(serde_json::json!(action)).expect("a sandbox action");
        kyc_sandbox::liveness_frames(&person, action, n)
    }

    pub async fn faults(&self, faults: Value) {
        let r = self
            .http
            .put(format!("{}/sandbox/faults", self.url))
            .json(&faults)
            .send()
            .await
            .expect("faults");
        assert!(
            r.status().is_success(),
            "sandbox refused faults {faults}: {}",
            r.status()
        );
    }

    async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/sandbox/stats", self.url))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("json")
    }

    pub async fn total_calls(&self) -> u64 {
        self.stats().await["total"].as_u64().expect("total")
    }

    pub async fn calls(&self, vendor: &str) -> u64 {
        self.stats().await["calls"][vendor]["total"]
            .as_u64()
            .expect("vendor total")
    }
}
