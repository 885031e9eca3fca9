use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Wrapper<T> {
    #[orm(primary_key)]
    id: i64,
    value: T,
}

fn main() {}
