//! kyc-vision, the on-premises vendor, started the way `kyc-sandbox` is in `common::sandbox`: from
//! its library (a dev-dependency, so cargo builds it with the test), in-process on an ephemeral
//! port, with the models `scripts/install-vision.sh` installs; and the demo files of the seed's
//! person (张三, 11010519491231002X) that `kyc-vision fixtures --name .. --id ..` writes.
//! Kept out of `support/mod.rs` so only the tests that use it link dlib and ONNX Runtime.

use std::sync::Arc;

use kyc_vision::fixtures::demo::{self, Demo};
use kyc_vision::fixtures::{self, CardFont, Identity, render};
use kyc_vision::http::{AppState, router};
use kyc_vision::imaging::DecodeLimits;
use kyc_vision::models;
use kyc_vision::pool::{Pool, PoolConfig};

/// The seed's person.
pub const NAME: &str = "张三";
pub const ID_NUMBER: &str = "11010519491231002X";

pub struct Vision {
    pub url: String,
    pub demo: Demo,
    server: tokio::task::JoinHandle<()>,
}

impl Vision {
    /// kyc-vision as `kyc-vision serve` runs it (the seed's three API keys, default pool and
    /// limits), once its models are loaded.
    pub async fn start() -> Self {
        let dir = models::dir(None);
        models::verify(&dir, &models::served_files())
            .unwrap_or_else(|e| panic!("{e} (run scripts/install-vision.sh)"));
        let (pool, demo) = tokio::task::spawn_blocking(move || {
            let pool = Pool::start(&dir, PoolConfig::default()).expect("kyc-vision models load");
            let font =
                CardFont::open(std::path::Path::new(render::DEFAULT_FONT)).expect("card font");
            let photos = fixtures::photographs(&dir).expect("photographs");
            let person = Identity::for_person(NAME, ID_NUMBER).expect("the seed's person");
            (pool, demo::demo(&person, &font, &photos[0], &photos[1]))
        })
        .await
        .expect("model loading");
        let state = AppState {
            pool,
            api_keys: Arc::new(kyc_sandbox::app::SEED_API_KEYS.map(str::to_owned).to_vec()),
            limits: DecodeLimits::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router(state)).await;
        });
        Self {
            url: format!("http://{addr}"),
            demo,
            server,
        }
    }

    /// `KYC__…` overrides that point the service's OCR, face and liveness vendors here, as
    /// `scripts/run.sh` does.
    pub fn vendor_overrides(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KYC__THIRD_PARTY__OCR_SERVICE__URL", self.url.clone()),
            ("KYC__THIRD_PARTY__FACE_SERVICE__URL", self.url.clone()),
            ("KYC__THIRD_PARTY__LIVENESS_SERVICE__URL", self.url.clone()),
        ]
    }

    /// A demo file by the name `kyc-vision fixtures` gives it.
    pub fn fixture(&self, file: &str) -> Vec<u8> {
        let d = &self.demo;
        match file {
            "idcard.jpg" => d.idcard.clone(),
            "idcard_photocopy.jpg" => d.idcard_photocopy.clone(),
            "idcard_back.jpg" => d.idcard_back.clone(),
            "face.jpg" => d.face.clone(),
            "face_other.jpg" => d.face_other.clone(),
            other => panic!("no fixture {other}"),
        }
    }
}

impl Drop for Vision {
    fn drop(&mut self) {
        self.server.abort();
    }
}
