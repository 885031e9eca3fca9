use orm_core::Entity;

#[derive(Clone, Debug, PartialEq)]
struct Address {
    street: String,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Customer {
    #[orm(primary_key, generated)]
    id: i64,
    address: Address,
}

fn main() {}
