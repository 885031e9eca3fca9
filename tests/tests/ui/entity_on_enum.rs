use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
enum Customer {
    Person { id: i64 },
    Company { id: i64 },
}

fn main() {}
