use orm_core::{Entity, Session};

#[derive(Entity, Clone, Debug, PartialEq)]
struct Customer {
    #[orm(primary_key, generated)]
    id: i64,
    name: String,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Order {
    #[orm(primary_key, generated)]
    id: i64,
    total: i64,
}

async fn customers(session: &mut Session) {
    let _ = session.query::<Customer>().filter(Order::ID.eq(1)).all().await;
}

fn main() {}
