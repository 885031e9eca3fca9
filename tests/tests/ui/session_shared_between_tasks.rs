use std::sync::Arc;

use orm_core::Database;

fn share(db: &Database) {
    let session = Arc::new(db.session());
    let shared = Arc::clone(&session);
    tokio::spawn(async move {
        let _ = shared.stats();
    });
    let _ = session.stats();
}

fn main() {}
