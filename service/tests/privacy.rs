//! No plaintext PII in any table: a raw `SELECT` of every row of every table, as text and as the
//! hex form PostgreSQL prints `bytea` in, finds no name, ID number or phone.

mod common;

use common::TestApp;
use kyc_service::store::requests::{ID_NUMBER_FIELD, NAME_FIELD, PHONE_FIELD, aad};
use serde_json::json;

const NAME: &str = "张三丰";
const ID_NUMBER: &str = "11010519491231002X";
const PHONE: &str = "13800138000";

#[tokio::test]
async fn a_raw_select_on_every_table_shows_no_plaintext_pii() {
    let app = TestApp::spawn().await;
    // Fill what this build writes: clients, tokens (and a reuse event), KYC requests.
    let id = app
        .insert_request("kyc-client", NAME, ID_NUMBER, PHONE)
        .await;
    let (_, t) = app
        .token_json(json!({"grant_type":"client_credentials","client_id":"kyc-client","client_secret":"kyc-client-secret"}))
        .await;
    for _ in 0..2 {
        app.token_json(json!({"grant_type":"refresh_token","client_id":"kyc-client","client_secret":"kyc-client-secret",
            "refresh_token": t["refresh_token"]}))
            .await;
    }

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    .fetch_all(app.pool())
    .await
    .expect("tables");
    for expected in [
        "api_clients",
        "audit_events",
        "idempotency_records",
        "kyc_requests",
        "liveness_sessions",
        "refresh_tokens",
        "vendor_calls",
    ] {
        assert!(
            tables.iter().any(|t| t == expected),
            "table {expected} exists: {tables:?}"
        );
    }
    let needles: Vec<String> = [NAME, ID_NUMBER, "11010519491231002", PHONE]
        .iter()
        .flat_map(|s| [(*s).to_owned(), hex::encode(s.as_bytes())])
        .collect();
    let mut rows_seen = 0;
    for table in &tables {
        let dump: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM {table} t"))
            .fetch_all(app.pool())
            .await
            .expect("raw select");
        rows_seen += dump.len();
        for row in &dump {
            for needle in &needles {
                assert!(
                    !row.to_lowercase().contains(&needle.to_lowercase()),
                    "{table} holds plaintext PII: {row}"
                );
            }
        }
    }
    assert!(rows_seen >= 5, "the check saw real rows ({rows_seen})");

    // The values are there, encrypted, and open with the service's keys.
    let (name, idn, phone, bidx): (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) = sqlx::query_as(
        "SELECT name_enc, id_number_enc, phone_enc, id_number_bidx FROM kyc_requests WHERE id = $1",
    )
    .bind(id)
    .fetch_one(app.pool())
    .await
    .expect("row");
    let keys = &app.state.keys;
    assert_eq!(
        keys.decrypt(&aad(NAME_FIELD, id), &name)
            .expect("name opens"),
        NAME.as_bytes()
    );
    assert_eq!(
        keys.decrypt(&aad(ID_NUMBER_FIELD, id), &idn)
            .expect("id opens"),
        ID_NUMBER.as_bytes()
    );
    assert_eq!(
        keys.decrypt(&aad(PHONE_FIELD, id), &phone)
            .expect("phone opens"),
        PHONE.as_bytes()
    );
    assert_eq!(
        &idn[1..5],
        hex::decode(keys.active_key_id()).expect("hex").as_slice(),
        "the key id is recorded"
    );
    assert!(
        keys.decrypt(&aad(NAME_FIELD, uuid::Uuid::new_v4()), &name)
            .is_err(),
        "moved to another row, it no longer opens"
    );
    // The blind index finds the row by ID number without decrypting anything.
    let found: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM kyc_requests WHERE id_number_bidx = $1")
            .bind(keys.blind_index(ID_NUMBER_FIELD, ID_NUMBER))
            .fetch_optional(app.pool())
            .await
            .expect("lookup");
    assert_eq!(found, Some(id));
    assert_eq!(bidx, keys.blind_index(ID_NUMBER_FIELD, ID_NUMBER));
    // Client secrets are argon2id hashes.
    let hash: String =
        sqlx::query_scalar("SELECT secret_hash FROM api_clients WHERE client_id = 'kyc-client'")
            .fetch_one(app.pool())
            .await
            .expect("client");
    assert!(hash.starts_with("$argon2id$") && !hash.contains("kyc-client-secret"));
}

#[tokio::test]
async fn the_audit_log_is_append_only() {
    let app = TestApp::spawn().await;
    kyc_service::store::audit::record(
        app.pool(),
        "system",
        "test.event",
        Some("x"),
        None,
        json!({}),
    )
    .await
    .expect("insert");
    for sql in [
        "UPDATE audit_events SET action = 'forged'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ] {
        let e = sqlx::query(sql).execute(app.pool()).await.expect_err(sql);
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
}
