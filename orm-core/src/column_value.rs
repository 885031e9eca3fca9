//! [`IntoColumnValue`]: which values a column compares with. Exactly the
//! column's type, or a borrowed form of it; never a conversion.

use crate::types::ColumnType;

/// A value that a [`Column`](crate::Column) of value type `V` can be
/// compared with: the argument of [`eq`](crate::Column::eq),
/// [`lt`](crate::Column::lt), [`between`](crate::Column::between),
/// [`like`](crate::Column::like), the items of
/// [`is_in`](crate::Column::is_in), and so on.
///
/// The rule is that a comparison is typed **exactly**: the value is the
/// column's own type `V`, a reference to one (`&V`, cloned), or, for a text
/// column, a `&str`. Nothing is widened or converted, unlike with
/// [`Into`]: `true`, `1u8` or an `i32` variable do not compare with an
/// `i64` column, nor an `f32` with an `f64` column, although the standard
/// library converts each of them losslessly. Such a comparison is nearly
/// always a mix-up of columns or variables, and PostgreSQL would refuse the
/// value anyway if it reached it in the wrong binary format. Integer and
/// float literals take the column's type, so `Customer::ID.eq(5)` is an
/// `i64` comparison on an `i64` column.
///
/// A nullable column (`Option<T>`) has value type `T`: it compares with a
/// plain `T`, and [`is_null`](crate::Column::is_null) tests for NULL.
///
/// ```
/// use orm_core::Entity;
///
/// #[derive(Entity, Clone, Debug, PartialEq)]
/// struct Customer {
///     #[orm(primary_key, generated)]
///     id: i64,
///     name: String,
///     city: Option<String>,
/// }
///
/// let name = String::from("Alice");
/// let _ = Customer::ID.eq(5); // the literal is an i64
/// let _ = Customer::ID.is_in(vec![1_i64, 2, 3]);
/// let _ = Customer::NAME.eq("Alice"); // &str for a text column
/// let _ = Customer::NAME.eq(&name); // &String, cloned
/// let _ = Customer::NAME.eq(name); // String
/// let _ = Customer::CITY.eq("Paris"); // Option<String> column, plain value
/// ```
///
/// ```compile_fail,E0277
/// # use orm_core::Entity;
/// # #[derive(Entity, Clone, Debug, PartialEq)]
/// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
/// let small: i32 = 5;
/// let _ = Customer::ID.eq(small); // an i32 is not an i64
/// ```
///
/// The trait is sealed: its implementations are the rule.
#[diagnostic::on_unimplemented(
    message = "a column of type `{V}` cannot be compared with a `{Self}`",
    label = "expected `{V}` or `&{V}`, found `{Self}`",
    note = "comparisons are typed exactly: pass the column's own type, with no conversion (a `&str` is accepted for text columns)"
)]
pub trait IntoColumnValue<V>: sealed::Sealed<V> {
    /// The value, as the column's type.
    fn into_column_value(self) -> V;
}

impl<V: ColumnType> IntoColumnValue<V> for V {
    fn into_column_value(self) -> V {
        self
    }
}

impl<V: ColumnType> IntoColumnValue<V> for &V {
    fn into_column_value(self) -> V {
        self.clone()
    }
}

impl IntoColumnValue<String> for &str {
    fn into_column_value(self) -> String {
        self.to_owned()
    }
}

/// Keeps the implementations to the ones above: one outside this crate
/// (say, `i32` for `i64` columns) would reintroduce the conversions the
/// trait exists to rule out, and make integer literals ambiguous.
mod sealed {
    use crate::types::ColumnType;

    pub trait Sealed<V> {}

    impl<V: ColumnType> Sealed<V> for V {}
    impl<V: ColumnType> Sealed<V> for &V {}
    impl Sealed<String> for &str {}
}
