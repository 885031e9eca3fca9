use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Invoice {
    #[orm(primary_key)]
    id: i64,
    total: i64,
    #[orm(column = "total")]
    gross: i64,
    #[orm(column = "discount", column = "rebate")]
    discount: i64,
    #[orm(sql_type = "numeric", sql_type = "int8")]
    net: i64,
    #[orm(sql_type = "int8[]; DROP TABLE invoice; --")]
    tax: i64,
    #[orm(sql_type = "varchar(5)")]
    code: String,
    #[orm(sql_type = "char")]
    grade: String,
    #[orm(column = "")]
    note: String,
    #[orm(version)]
    version: i32,
    #[orm(version)]
    revision: i32,
}

fn main() {}
