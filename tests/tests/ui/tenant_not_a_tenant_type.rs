use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Invoice {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(tenant)]
    tenant_id: Option<i64>,
}

fn main() {}
