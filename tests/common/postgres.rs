//! PostgreSQL for tests: a fresh database per call on the server `DSS_TEST_DATABASE_URL`
//! names (`scripts/test` starts a private one and sets it).

use sqlx::Connection;

/// The server's URL, or a panic that says how to get one.
pub fn server_url() -> String {
    std::env::var("DSS_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DSS_TEST_DATABASE_URL is not set: these tests need PostgreSQL. Run scripts/test (it starts a \
             private server), or start one with `scripts/postgres start DIR` and export the URL it prints"
        )
    })
}

/// A new, empty database; its URL.
pub async fn fresh_database() -> String {
    let base = server_url();
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to DSS_TEST_DATABASE_URL {base}: {e}"));
    let name = format!("dss_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}
