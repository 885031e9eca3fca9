use orm_core::DbEnum;

#[derive(DbEnum, Clone, Debug, PartialEq)]
enum Status {
    Active,
    Suspended(String),
}

fn main() {}
