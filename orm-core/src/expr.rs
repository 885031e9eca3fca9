//! [`Expr`]: typed SQL expressions over an entity's columns, for filters
//! that compare two columns, computed values, projections and aggregates.
//!
//! An expression knows its entity `E` and the Rust type `V` it decodes to,
//! so comparing a text expression with a number, summing a text column or
//! mixing two entities' columns does not compile. Every value in an
//! expression is a bind parameter; the statement text depends only on the
//! expression's shape.

use std::fmt::{self, Write};
use std::marker::PhantomData;
use std::ops::{Add, Div, Mul, Sub};
use std::sync::Arc;

use bytes::BytesMut;
use tokio_postgres::types::{Format, IsNull, ToSql, Type};

use crate::column::{push_direction, Column, Condition, Correlated, Order, SharedCondition};
use crate::entity::EntityMeta;
use crate::sql::{push_column, push_placeholder};
use crate::types::{ColumnType, Param};

/// A bind parameter shared between clones of a condition or expression, so
/// that one filter can serve a count and a page.
#[derive(Clone)]
pub(crate) struct SharedParam(Arc<dyn ToSql + Send + Sync>);

impl SharedParam {
    pub(crate) fn new(value: impl ToSql + Send + Sync + 'static) -> Self {
        SharedParam(Arc::new(value))
    }

    /// A parameter for a statement's parameter list.
    pub(crate) fn to_param(&self) -> Param {
        Box::new(self.clone())
    }
}

impl From<Param> for SharedParam {
    fn from(param: Param) -> Self {
        SharedParam(Arc::from(param))
    }
}

impl PartialEq for SharedParam {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for SharedParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl ToSql for SharedParam {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.to_sql_checked(ty, out)
    }

    // The shared value checks its own type in `to_sql_checked`.
    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.to_sql_checked(ty, out)
    }

    fn encode_format(&self, ty: &Type) -> Format {
        self.0.encode_format(ty)
    }
}

/// The shape of an expression, without its types. Two nodes are equal when
/// they are the same expression: the same shape, and values that are the
/// same shared parameters (clones of one expression).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ExprNode {
    Column(&'static str),
    Value(SharedParam),
    /// `function(args, ...)`, also with no arguments (`now()`).
    Call {
        function: &'static str,
        args: Vec<ExprNode>,
    },
    Binary {
        operator: &'static str,
        left: Box<ExprNode>,
        right: Box<ExprNode>,
    },
    /// `function([DISTINCT] arg)`, or `count(*)` without an argument,
    /// followed by `FILTER (WHERE filter)` when it aggregates only the
    /// rows matching a condition.
    Aggregate {
        function: &'static str,
        distinct: bool,
        arg: Option<Box<ExprNode>>,
        filter: Option<SharedCondition>,
    },
    Cast {
        expr: Box<ExprNode>,
        to: &'static str,
    },
    /// SQL written by hand, with `$1`, `$2`, ... numbering its own parameters.
    Raw {
        sql: Arc<str>,
        params: Vec<SharedParam>,
    },
    /// A condition as a `bool` value ([`Condition::into_expr`]).
    Condition(SharedCondition),
    /// A subquery over the rows of a relation's child table that belong to
    /// the row: how many there are, or an array of one of their columns.
    Correlated {
        subquery: SharedCorrelated,
        gather: Gather,
    },
    /// The result column at this 1-based position, in GROUP BY or ORDER BY:
    /// an expression holding a value is written again there by position,
    /// since its value would get a parameter of its own, which PostgreSQL
    /// does not take for the same expression.
    Position(usize),
}

/// What a [`ExprNode::Correlated`] subquery computes over the child rows.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Gather {
    /// `count(*)`.
    Count,
    /// `ARRAY(SELECT column ... ORDER BY order)`: the column's values, in
    /// the order of an expression of the child.
    Array { column: &'static str, order: Box<ExprNode>, descending: bool, nulls_first: Option<bool> },
}

impl Gather {
    /// The same, its order with the global filters of the tables it reaches.
    fn with_related_filters(&self, filters: &dyn Fn(&'static EntityMeta) -> Option<Condition<()>>) -> Self {
        match self {
            Gather::Count => Gather::Count,
            Gather::Array { column, order, descending, nulls_first } => Gather::Array {
                column,
                order: Box::new(order.with_related_filters(filters)),
                descending: *descending,
                nulls_first: *nulls_first,
            },
        }
    }
}

/// A [`Correlated`] subquery inside an expression. Clones of one expression
/// share it, and are equal as the same expression, as conditions are
/// ([`SharedCondition`]).
#[derive(Clone)]
pub(crate) struct SharedCorrelated(pub(crate) Arc<Correlated>);

impl PartialEq for SharedCorrelated {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for SharedCorrelated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subquery")
    }
}

impl ExprNode {
    /// The same expression with the global filters (soft deletion, the
    /// tenant) of every other table it reaches, through conditions and
    /// relation subqueries, so that a hidden row counts nowhere: see
    /// [`Condition::with_related_filters`].
    pub(crate) fn with_related_filters(&self, filters: &dyn Fn(&'static EntityMeta) -> Option<Condition<()>>) -> Self {
        let map = |node: &ExprNode| node.with_related_filters(filters);
        match self {
            ExprNode::Call { function, args } => ExprNode::Call { function, args: args.iter().map(map).collect() },
            ExprNode::Binary { operator, left, right } => {
                ExprNode::Binary { operator, left: Box::new(map(left)), right: Box::new(map(right)) }
            }
            ExprNode::Aggregate { function, distinct, arg, filter } => ExprNode::Aggregate {
                function,
                distinct: *distinct,
                arg: arg.as_deref().map(|arg| Box::new(map(arg))),
                filter: filter.as_ref().map(|filter| filter.with_related_filters(filters)),
            },
            ExprNode::Cast { expr, to } => ExprNode::Cast { expr: Box::new(map(expr)), to },
            ExprNode::Condition(condition) => ExprNode::Condition(condition.with_related_filters(filters)),
            ExprNode::Correlated { subquery, gather } => ExprNode::Correlated {
                subquery: SharedCorrelated(Arc::new(subquery.0.with_related_filters(filters))),
                gather: gather.with_related_filters(filters),
            },
            ExprNode::Column(_) | ExprNode::Value(_) | ExprNode::Raw { .. } | ExprNode::Position(_) => self.clone(),
        }
    }

    /// Whether SQL written by hand is part of the expression: its `t`
    /// names a table the expression cannot requalify.
    pub(crate) fn has_raw(&self) -> bool {
        match self {
            ExprNode::Raw { .. } => true,
            ExprNode::Condition(condition) => condition.has_raw(),
            ExprNode::Call { args, .. } => args.iter().any(ExprNode::has_raw),
            ExprNode::Binary { left, right, .. } => left.has_raw() || right.has_raw(),
            ExprNode::Aggregate { arg, filter, .. } => {
                arg.as_deref().is_some_and(ExprNode::has_raw) || filter.as_ref().is_some_and(SharedCondition::has_raw)
            }
            ExprNode::Cast { expr, .. } => expr.has_raw(),
            // A subquery's own SQL written by hand is scoped to its table
            // (see `Correlated::render` and the array's order below).
            ExprNode::Column(_) | ExprNode::Value(_) | ExprNode::Position(_) | ExprNode::Correlated { .. } => false,
        }
    }

    /// Appends the expression's SQL to `sql`, columns qualified with
    /// `table`, its values pushed onto `params`.
    pub(crate) fn render(&self, table: &str, sql: &mut String, params: &mut Vec<Param>) {
        match self {
            ExprNode::Column(name) => push_column(sql, table, name),
            ExprNode::Value(value) => {
                params.push(value.to_param());
                push_placeholder(sql, params.len());
            }
            ExprNode::Call { function, args } => {
                sql.push_str(function);
                sql.push('(');
                for (n, arg) in args.iter().enumerate() {
                    if n > 0 {
                        sql.push_str(", ");
                    }
                    arg.render(table, sql, params);
                }
                sql.push(')');
            }
            ExprNode::Binary { operator, left, right } => {
                sql.push('(');
                left.render(table, sql, params);
                sql.push(' ');
                sql.push_str(operator);
                sql.push(' ');
                right.render(table, sql, params);
                sql.push(')');
            }
            ExprNode::Aggregate { function, distinct, arg, filter } => {
                sql.push_str(function);
                sql.push('(');
                match arg {
                    Some(arg) => {
                        if *distinct {
                            sql.push_str("DISTINCT ");
                        }
                        arg.render(table, sql, params);
                    }
                    None => sql.push('*'),
                }
                sql.push(')');
                if let Some(filter) = filter {
                    sql.push_str(" FILTER (WHERE ");
                    filter.render(table, sql, params);
                    sql.push(')');
                }
            }
            ExprNode::Cast { expr, to } => {
                sql.push('(');
                expr.render(table, sql, params);
                let _ = write!(sql, ")::{to}");
            }
            // `IS TRUE`: a condition that comparing with NULL leaves unknown
            // is false, as in `WHERE`, so the value is never NULL.
            ExprNode::Condition(condition) => {
                sql.push_str("((");
                condition.render(table, sql, params);
                sql.push_str(") IS TRUE)");
            }
            ExprNode::Correlated { subquery, gather: Gather::Count } => {
                subquery.0.render(table, sql, params, |_, sql| sql.push_str("(SELECT count(*)"));
                sql.push(')');
            }
            ExprNode::Correlated { subquery, gather: Gather::Array { column, order, descending, nulls_first } } => {
                let alias = subquery.0.render(table, sql, params, |alias, sql| {
                    sql.push_str("ARRAY(SELECT ");
                    push_column(sql, alias, column);
                });
                sql.push_str(" ORDER BY ");
                if order.has_raw() {
                    subquery.0.render_raw_value(&alias, order, sql, params);
                } else {
                    order.render(&alias, sql, params);
                }
                push_direction(sql, *descending, *nulls_first);
                sql.push(')');
            }
            ExprNode::Position(position) => sql.push_str(itoa::Buffer::new().format(*position)),
            ExprNode::Raw { sql: fragment, params: own } => {
                sql.push('(');
                sql.push_str(&renumber(fragment, params.len(), own.len()));
                sql.push(')');
                params.extend(own.iter().map(SharedParam::to_param));
            }
        }
    }
}

/// `fragment` with each `$n` shifted by `offset`, so a raw fragment's own
/// parameters follow those of the statement before it. `$n` inside a
/// string literal (`'...'`, `E'...'`), a quoted identifier (`"..."`), a
/// dollar-quoted string (`$$...$$`, `$tag$...$tag$`) or a comment is left
/// alone. A reference beyond the fragment's `count` parameters (or `$0`)
/// becomes `$0`, which PostgreSQL refuses, rather than silently naming
/// another clause's parameter.
fn renumber(fragment: &str, offset: usize, count: usize) -> String {
    let bytes = fragment.as_bytes();
    let mut out = String::with_capacity(fragment.len());
    let mut i = 0;
    // Copies `fragment[i..end]` verbatim and moves on.
    let copy = |out: &mut String, from: usize, to: usize| out.push_str(&fragment[from..to]);
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\'' | b'"' => {
                // E'...' takes backslash escapes.
                let escapes = c == b'\'' && i > 0 && matches!(bytes[i - 1], b'E' | b'e');
                let mut end = i + 1;
                while end < bytes.len() && bytes[end] != c {
                    end += if escapes && bytes[end] == b'\\' { 2 } else { 1 };
                }
                let end = (end + 1).min(bytes.len());
                copy(&mut out, i, end);
                i = end;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                let end = fragment[i..].find('\n').map_or(bytes.len(), |n| i + n);
                copy(&mut out, i, end);
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = fragment[i + 2..].find("*/").map_or(bytes.len(), |n| i + 2 + n + 2);
                copy(&mut out, i, end);
                i = end;
            }
            b'$' => {
                let digits = bytes[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
                if digits > 0 {
                    let n: usize = fragment[i + 1..i + 1 + digits].parse().unwrap_or(0);
                    let shifted = if (1..=count).contains(&n) { n + offset } else { 0 };
                    let _ = write!(out, "${shifted}");
                    i += 1 + digits;
                    continue;
                }
                // A dollar quote `$tag$`: a tag of letters, digits and `_`,
                // not starting with a digit, or none.
                let tag_len = bytes[i + 1..].iter().take_while(|d| d.is_ascii_alphanumeric() || **d == b'_').count();
                if bytes.get(i + 1 + tag_len) == Some(&b'$') {
                    let tag = &fragment[i..i + tag_len + 2];
                    let body = i + tag.len();
                    let end = fragment[body..].find(tag).map_or(bytes.len(), |n| body + n + tag.len());
                    copy(&mut out, i, end);
                    i = end;
                } else {
                    out.push('$');
                    i += 1;
                }
            }
            _ => {
                // Up to the next character that matters, keeping UTF-8 whole.
                let end = fragment[i..].find(['\'', '"', '-', '/', '$']).map_or(bytes.len(), |n| {
                    if n == 0 {
                        i + 1
                    } else {
                        i + n
                    }
                });
                copy(&mut out, i, end);
                i = end;
            }
        }
    }
    out
}

/// A SQL expression over entity `E` whose value decodes to `V`: a column,
/// a value, a function call, arithmetic, an aggregate, or a raw fragment.
///
/// Make one from a column ([`Column::expr`], or the shortcuts on
/// [`Column`] such as [`Column::lower`] and [`Column::sum`]), compare it
/// into a [`Condition`], sort by it, or select it with
/// [`Query::select`](crate::Query::select).
///
/// ```
/// # use orm_core::{Database, Entity, Expr, Tracked};
/// #[derive(Entity, Clone, Debug, PartialEq)]
/// struct Item {
///     #[orm(primary_key, generated)]
///     id: i64,
///     name: String,
///     price: i32,
///     cost: i32,
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE item (id bigserial PRIMARY KEY, name text NOT NULL, price int NOT NULL, cost int NOT NULL);
/// #     INSERT INTO item (name, price, cost) VALUES ('Tea', 4, 1), ('Scones', 6, 6), ('Jam', 5, 2)").await?;
/// # let db = Database::connect(test_db.url())?;
/// let mut session = db.session();
/// // Two columns compared, and arithmetic: items sold at more than twice their cost.
/// let margin = session.query::<Item>().filter(Item::PRICE.expr().gt(Item::COST * 2)).count().await?;
/// assert_eq!(margin, 2);
///
/// let names: Vec<String> =
///     session.query::<Item>().select(Item::NAME.upper()).order_by(Item::NAME.asc()).all().await?;
/// assert_eq!(names, ["JAM", "SCONES", "TEA"]);
/// # Ok(()) }
/// ```
pub struct Expr<E, V> {
    pub(crate) node: ExprNode,
    _types: PhantomData<fn() -> (E, V)>,
}

impl<E, V> Clone for Expr<E, V> {
    fn clone(&self) -> Self {
        Expr::from_node(self.node.clone())
    }
}

impl<E, V> fmt::Debug for Expr<E, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.node).finish()
    }
}

impl<E, V> Expr<E, V> {
    pub(crate) fn from_node(node: ExprNode) -> Self {
        Expr { node, _types: PhantomData }
    }

    fn call<W>(function: &'static str, args: Vec<ExprNode>) -> Expr<E, W> {
        Expr::from_node(ExprNode::Call { function, args })
    }

    fn aggregate<W>(self, function: &'static str, distinct: bool) -> Expr<E, W> {
        Expr::from_node(ExprNode::Aggregate { function, distinct, arg: Some(Box::new(self.node)), filter: None })
    }

    fn cast<W>(self, to: &'static str) -> Expr<E, W> {
        Expr::from_node(ExprNode::Cast { expr: Box::new(self.node), to })
    }

    fn compare(self, operator: &'static str, other: ExprNode) -> Condition<E> {
        Condition::compare_expr(self.node, operator, other)
    }

    /// A fragment of SQL written by hand, the escape hatch for what the
    /// builder cannot say. Refer to the queried table as `t` and to the
    /// fragment's own `params` as `$1`, `$2`, ...: they are renumbered to
    /// follow the statement's other parameters. `V` is the type its value
    /// decodes to. Values go in `params`, never into the text.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Expr};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Item { #[orm(primary_key, generated)] id: i64, name: String, price: i32, cost: i32 }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE item (id bigserial PRIMARY KEY, name text NOT NULL, price int NOT NULL, cost int NOT NULL);
    /// #     INSERT INTO item (name, price, cost) VALUES ('Tea', 4, 1), ('Scones', 6, 6), ('Jam', 5, 2)").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let name_length = Expr::<Item, i32>::raw("char_length(t.name) + $1", vec![Box::new(100_i32)]);
    /// let long = session.query::<Item>().filter(name_length.ge(105)).count().await?;
    /// assert_eq!(long, 1); // "Scones"
    /// # Ok(()) }
    /// ```
    pub fn raw(sql: &str, params: Vec<Param>) -> Self {
        Expr::from_node(ExprNode::Raw {
            sql: Arc::from(sql),
            params: params.into_iter().map(SharedParam::from).collect(),
        })
    }

    /// `expression = other`; `expression IS NULL` if `other` is `None`.
    pub fn eq(self, other: impl IntoExpr<E, V>) -> Condition<E> {
        if other.is_null_value() {
            return self.is_null();
        }
        self.compare("=", other.into_expr().node)
    }

    /// `expression <> other`; `expression IS NOT NULL` if `other` is `None`.
    pub fn ne(self, other: impl IntoExpr<E, V>) -> Condition<E> {
        if other.is_null_value() {
            return self.is_not_null();
        }
        self.compare("<>", other.into_expr().node)
    }

    /// `expression < other`
    pub fn lt(self, other: impl IntoExpr<E, V>) -> Condition<E> {
        self.compare("<", other.into_expr().node)
    }

    /// `expression <= other`
    pub fn le(self, other: impl IntoExpr<E, V>) -> Condition<E> {
        self.compare("<=", other.into_expr().node)
    }

    /// `expression > other`
    pub fn gt(self, other: impl IntoExpr<E, V>) -> Condition<E> {
        self.compare(">", other.into_expr().node)
    }

    /// `expression >= other`
    pub fn ge(self, other: impl IntoExpr<E, V>) -> Condition<E> {
        self.compare(">=", other.into_expr().node)
    }

    /// `expression IS NULL`
    pub fn is_null(self) -> Condition<E> {
        Condition::null_expr(self.node, false)
    }

    /// `expression IS NOT NULL`
    pub fn is_not_null(self) -> Condition<E> {
        Condition::null_expr(self.node, true)
    }

    /// Sorts by this expression, smallest first.
    pub fn asc(self) -> Order<E> {
        Order::new(self.node, false)
    }

    /// Sorts by this expression, largest first.
    pub fn desc(self) -> Order<E> {
        Order::new(self.node, true)
    }

    /// `coalesce(expression, default)`: `default` where the expression is NULL.
    #[must_use]
    pub fn coalesce(self, default: impl IntoExpr<E, V>) -> Self {
        Self::call("coalesce", vec![self.node, default.into_expr().node])
    }

    /// The same expression, decoded as `Option<V>`: for a nullable column
    /// in a projection, whose NULLs a plain `V` cannot hold.
    pub fn nullable(self) -> Expr<E, Option<V>> {
        Expr::from_node(self.node)
    }

    /// `count(expression)`: the rows where it is not NULL.
    pub fn count(self) -> Expr<E, i64> {
        self.aggregate("count", false)
    }

    /// `count(DISTINCT expression)`: its distinct non-NULL values.
    pub fn count_distinct(self) -> Expr<E, i64> {
        self.aggregate("count", true)
    }
}

impl<E> Expr<E, i64> {
    /// `count(*)`: the rows of the query, or of each group.
    pub fn count_all() -> Self {
        Expr::from_node(ExprNode::Aggregate { function: "count", distinct: false, arg: None, filter: None })
    }

    /// `count(*) FILTER (WHERE condition)`: the rows of the query, or of
    /// each group, that match `condition` (one whose result is NULL does
    /// not, as in `WHERE`). Several such counts in one projection answer
    /// several questions about the same rows in one pass, where separate
    /// filtered counts would each read them again.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Expr};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Review { #[orm(primary_key, generated)] id: i64, book_id: i64, reviewer_id: i64, stars: i32 }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE review (id bigserial PRIMARY KEY, book_id bigint NOT NULL, reviewer_id bigint NOT NULL, stars int NOT NULL);
    /// #     INSERT INTO review (book_id, reviewer_id, stars) VALUES (1, 7, 5), (1, 8, 2), (1, 9, 4), (2, 8, 1)").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// // SELECT t."book_id", count(*), count(*) FILTER (WHERE t."stars" >= $1) ... GROUP BY 1
    /// let counts: Vec<(i64, i64, i64)> = session
    ///     .query::<Review>()
    ///     .select((Review::BOOK_ID, Expr::count_all(), Expr::count_where(Review::STARS.ge(4))))
    ///     .group_by(Review::BOOK_ID)
    ///     .order_by(Review::BOOK_ID.asc())
    ///     .all()
    ///     .await?;
    /// assert_eq!(counts, [(1, 3, 2), (2, 1, 0)]);
    /// # Ok(()) }
    /// ```
    pub fn count_where(condition: Condition<E>) -> Self {
        Expr::from_node(ExprNode::Aggregate {
            function: "count",
            distinct: false,
            arg: None,
            filter: Some(condition.into_shared()),
        })
    }
}

impl<E> Expr<E, bool> {
    /// Whether any row of the query, or of each group, matches `condition`
    /// (`count(*) FILTER (WHERE condition) > 0`): `false`, never NULL, when
    /// none does, also over no rows or where the condition's result is
    /// NULL. A typed way to ask, in the aggregate that counts a group,
    /// whether one of its rows is the current user's, say.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Expr};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Review { #[orm(primary_key, generated)] id: i64, book_id: i64, reviewer_id: i64, stars: i32 }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE review (id bigserial PRIMARY KEY, book_id bigint NOT NULL, reviewer_id bigint NOT NULL, stars int NOT NULL);
    /// #     INSERT INTO review (book_id, reviewer_id, stars) VALUES (1, 7, 5), (1, 8, 2), (2, 8, 1)").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let viewer = 7_i64;
    /// let mut session = db.session();
    /// // How many reviews each book has, and whether the viewer wrote one of them.
    /// let books: Vec<(i64, i64, bool)> = session
    ///     .query::<Review>()
    ///     .select((Review::BOOK_ID, Expr::count_all(), Expr::any_where(Review::REVIEWER_ID.eq(viewer))))
    ///     .group_by(Review::BOOK_ID)
    ///     .order_by(Review::BOOK_ID.asc())
    ///     .all()
    ///     .await?;
    /// assert_eq!(books, [(1, 2, true), (2, 1, false)]);
    /// # Ok(()) }
    /// ```
    pub fn any_where(condition: Condition<E>) -> Self {
        let matching = Expr::<E, i64>::count_where(condition).node;
        let none = ExprNode::Value(SharedParam::new(0_i64));
        Expr::from_node(ExprNode::Binary { operator: ">", left: Box::new(matching), right: Box::new(none) })
    }
}

impl<E> Expr<E, chrono::DateTime<chrono::Utc>> {
    /// `now()`: the transaction's start time.
    pub fn now() -> Self {
        Self::call("now", Vec::new())
    }
}

impl<E, V: Ordered> Expr<E, V> {
    /// `min(expression)`, NULL (`None`) over no rows.
    pub fn min(self) -> Expr<E, Option<V>> {
        self.aggregate("min", false)
    }

    /// `max(expression)`, NULL (`None`) over no rows.
    pub fn max(self) -> Expr<E, Option<V>> {
        self.aggregate("max", false)
    }
}

impl<E, V: Numeric> Expr<E, V> {
    /// `sum(expression)`, NULL (`None`) over no rows. The type follows
    /// PostgreSQL's: the sum of `i16` or `i32` is an exact `i64`; the sum
    /// of `i64`, a `numeric` there, is cast back to `i64`, so an overflow
    /// is an error ([`Error::BadData`](crate::Error::BadData)) rather than
    /// a rounded value; floats sum in their own type.
    pub fn sum(self) -> Expr<E, Option<V::Sum>> {
        let sum: Expr<E, Option<V::Sum>> = self.aggregate("sum", false);
        match V::SUM_CAST {
            Some(to) => sum.cast(to),
            None => sum,
        }
    }

    /// `avg(expression)` as `f64`, NULL (`None`) over no rows. PostgreSQL
    /// averages integers as exact `numeric`; the cast to `float8` keeps
    /// about 15 significant digits, plenty for an average.
    pub fn avg(self) -> Expr<E, Option<f64>> {
        self.aggregate::<Option<f64>>("avg", false).cast("float8")
    }
}

impl<E> Expr<E, String> {
    /// `lower(expression)`
    #[must_use]
    pub fn lower(self) -> Self {
        Self::call("lower", vec![self.node])
    }

    /// `upper(expression)`
    #[must_use]
    pub fn upper(self) -> Self {
        Self::call("upper", vec![self.node])
    }
}

/// Types that sort, for `min` and `max`.
pub trait Ordered: ColumnType {}

macro_rules! ordered {
    ($($ty:ty),*) => { $(impl Ordered for $ty {})* };
}

ordered!(
    i16,
    i32,
    i64,
    f32,
    f64,
    String,
    uuid::Uuid,
    chrono::DateTime<chrono::Utc>,
    chrono::NaiveDateTime,
    chrono::NaiveDate,
    chrono::NaiveTime
);

/// Number types: arithmetic and `sum`/`avg` apply to them.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a number type: arithmetic, sum and avg need i16, i32, i64, f32 or f64",
    label = "not a number"
)]
pub trait Numeric: ColumnType {
    /// The Rust type of `sum` over this type.
    type Sum: ColumnType;
    /// The cast that brings PostgreSQL's sum to `Sum`, if its type differs.
    #[doc(hidden)]
    const SUM_CAST: Option<&'static str>;
}

impl Numeric for i16 {
    type Sum = i64;
    const SUM_CAST: Option<&'static str> = None;
}

impl Numeric for i32 {
    type Sum = i64;
    const SUM_CAST: Option<&'static str> = None;
}

impl Numeric for i64 {
    type Sum = i64;
    const SUM_CAST: Option<&'static str> = Some("int8");
}

impl Numeric for f32 {
    type Sum = f32;
    const SUM_CAST: Option<&'static str> = None;
}

impl Numeric for f64 {
    type Sum = f64;
    const SUM_CAST: Option<&'static str> = None;
}

macro_rules! arithmetic {
    ($($trait:ident $method:ident $operator:literal),*) => {$(
        impl<E, V: Numeric, R: IntoExpr<E, V>> $trait<R> for Expr<E, V> {
            type Output = Expr<E, V>;

            fn $method(self, other: R) -> Expr<E, V> {
                let right = other.into_expr().node;
                Expr::from_node(ExprNode::Binary { operator: $operator, left: Box::new(self.node), right: Box::new(right) })
            }
        }

        impl<E: crate::Entity, V: Numeric, R: IntoExpr<E, V>> $trait<R> for Column<E, V> {
            type Output = Expr<E, V>;

            fn $method(self, other: R) -> Expr<E, V> {
                $trait::$method(self.expr(), other)
            }
        }
    )*};
}

arithmetic!(Add add "+", Sub sub "-", Mul mul "*", Div div "/");

/// What an expression of entity `E` and type `V` compares with: another
/// expression or column of `E` with values of `V`, or a value of `V` (`&V`,
/// and `&str` for text), which becomes a bind parameter.
#[diagnostic::on_unimplemented(
    message = "an expression of type `{V}` cannot be compared with a `{Self}`",
    note = "compare with a column or expression of the same entity and type, or a value of the type itself"
)]
pub trait IntoExpr<E, V> {
    /// The expression.
    fn into_expr(self) -> Expr<E, V>;

    /// Whether this is a NULL value (`None`): [`Expr::eq`] and
    /// [`Expr::ne`] then test `IS [NOT] NULL`, since `= NULL` never holds.
    #[doc(hidden)]
    fn is_null_value(&self) -> bool {
        false
    }
}

impl<E, V: ColumnType> IntoExpr<E, V> for V {
    fn into_expr(self) -> Expr<E, V> {
        Expr::from_node(ExprNode::Value(SharedParam::new(self)))
    }

    fn is_null_value(&self) -> bool {
        self.is_null()
    }
}

impl<E, V: ColumnType> IntoExpr<E, V> for &V {
    fn into_expr(self) -> Expr<E, V> {
        Expr::from_node(ExprNode::Value(SharedParam::new(self.clone())))
    }

    fn is_null_value(&self) -> bool {
        self.is_null()
    }
}

impl<E> IntoExpr<E, String> for &str {
    fn into_expr(self) -> Expr<E, String> {
        Expr::from_node(ExprNode::Value(SharedParam::new(self.to_owned())))
    }
}

impl<E, V> IntoExpr<E, V> for Expr<E, V> {
    fn into_expr(self) -> Expr<E, V> {
        self
    }
}

impl<E: crate::Entity, V: ColumnType> IntoExpr<E, V> for Column<E, V> {
    fn into_expr(self) -> Expr<E, V> {
        self.expr()
    }
}
