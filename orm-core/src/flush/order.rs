//! The order of tables in a flush: parents before the children that
//! reference them for inserts, children first for deletes.

use smallvec::SmallVec;

use crate::entity::{ColumnSet, EntityMeta};

/// One value per table of a flush, inline for the few tables a request's
/// flush has: each of these lists was an allocation of every flush.
pub(crate) type PerTable<T> = SmallVec<[T; 4]>;

/// Table indexes ordered so that each table comes after every other table it
/// references (self-references aside: rows of one table that reference each
/// other are ordered by the flush's round trips), not counting the columns
/// in `deferred` (per table: set by a post-update, see [`breakable`]). Tables
/// on a reference cycle keep their given order, and are returned as the
/// second value.
pub(crate) fn parents_first(
    tables: &[&'static EntityMeta],
    deferred: &[ColumnSet],
) -> (PerTable<usize>, PerTable<usize>) {
    if tables.len() < 2 {
        // Nothing to order against, as a short request's session has: the
        // loop below would allocate and free its scratch lists for nothing.
        return ((0..tables.len()).collect(), PerTable::new());
    }
    let references = |child: usize, parent: usize| {
        child != parent
            && tables[child]
                .columns
                .iter()
                .enumerate()
                .any(|(i, column)| deferred[child] & (1 << i) == 0 && column.references(tables[parent]))
    };
    let mut ordered = PerTable::with_capacity(tables.len());
    let mut placed = vec![false; tables.len()];
    loop {
        let ready: Vec<usize> = (0..tables.len())
            .filter(|&t| !placed[t] && (0..tables.len()).all(|p| placed[p] || !references(t, p)))
            .collect();
        if ready.is_empty() {
            break;
        }
        for t in ready {
            placed[t] = true;
            ordered.push(t);
        }
    }
    let cyclic: PerTable<usize> = (0..tables.len()).filter(|&t| !placed[t]).collect();
    ordered.extend(cyclic.iter().copied());
    (ordered, cyclic)
}

/// The order of a flush's tables ([`parents_first`], once the cycles are
/// broken where they can be), the tables left on a cycle, and per table the
/// columns a post-update sets ([`breakable`]).
pub(crate) fn flush_order(tables: &[&'static EntityMeta]) -> (PerTable<usize>, PerTable<usize>, PerTable<ColumnSet>) {
    let none = smallvec::smallvec![0; tables.len()];
    let (order, cyclic) = parents_first(tables, &none);
    if cyclic.is_empty() {
        // No cycle to break: no post-updates, and the order stands.
        return (order, cyclic, none);
    }
    let deferred = breakable(tables, &cyclic);
    let (order, cyclic) = parents_first(tables, &deferred);
    (order, cyclic, deferred)
}

/// For the tables on a reference cycle, the foreign keys that can break it:
/// nullable columns referencing another table of the cycle. Inserted as
/// NULL, they are set by an UPDATE (a post-update) in the flush's last round
/// trip, after the rows they reference exist.
fn breakable(tables: &[&'static EntityMeta], cyclic: &[usize]) -> PerTable<ColumnSet> {
    (0..tables.len())
        .map(|t| {
            let meta = tables[t];
            if !cyclic.contains(&t) {
                return 0;
            }
            meta.columns.iter().enumerate().fold(0, |set, (i, column)| {
                let in_cycle = cyclic.iter().any(|&other| other != t && column.references(tables[other]));
                if column.nullable && in_cycle {
                    set | (1 << i)
                } else {
                    set
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{flush_order, parents_first, PerTable};
    use crate::entity::{ColumnMeta, ColumnSet, EntityMeta};

    fn vecs2((order, cyclic): (PerTable<usize>, PerTable<usize>)) -> (Vec<usize>, Vec<usize>) {
        (order.into_vec(), cyclic.into_vec())
    }

    fn vecs3(
        (order, cyclic, deferred): (PerTable<usize>, PerTable<usize>, PerTable<ColumnSet>),
    ) -> (Vec<usize>, Vec<usize>, Vec<ColumnSet>) {
        (order.into_vec(), cyclic.into_vec(), deferred.into_vec())
    }

    const fn column(name: &'static str, references: Option<fn() -> &'static EntityMeta>) -> ColumnMeta {
        ColumnMeta {
            name,
            field: name,
            sql_type: "int8",
            batch_type: None,
            nullable: false,
            primary_key: false,
            generated: false,
            version: false,
            references,
            foreign_key_columns: &[],
            cascade_delete: false,
            enum_labels: None,
            soft_delete: false,
            tenant: false,
        }
    }

    static USER: EntityMeta = EntityMeta { name: "User", table: "user", columns: &[column("id", None)] };
    static POST: EntityMeta =
        EntityMeta { name: "Post", table: "post", columns: &[column("author_id", Some(|| &USER))] };
    static COMMENT: EntityMeta = EntityMeta {
        name: "Comment",
        table: "comment",
        columns: &[column("post_id", Some(|| &POST)), column("parent_id", Some(|| &COMMENT))],
    };
    static A: EntityMeta = EntityMeta { name: "A", table: "a", columns: &[column("b_id", Some(|| &B))] };
    static B: EntityMeta = EntityMeta { name: "B", table: "b", columns: &[column("a_id", Some(|| &A))] };

    #[test]
    fn parents_come_before_children_whatever_the_given_order() {
        let (order, cyclic) = parents_first(&[&COMMENT, &POST, &USER], &[0, 0, 0]);
        assert_eq!(order[..], [2, 1, 0]);
        assert!(cyclic.is_empty(), "a self-reference is not a cycle between tables");
    }

    #[test]
    fn a_cycle_between_tables_is_reported() {
        let (order, cyclic) = parents_first(&[&A, &USER, &B], &[0, 0, 0]);
        assert_eq!(order[..], [1, 0, 2]);
        assert_eq!(cyclic[..], [0, 2]);
        let (order, cyclic) = parents_first(&[&A, &USER, &B], &[1, 0, 0]);
        assert_eq!(order[..], [0, 1, 2], "with A.b_id deferred, A goes first");
        assert!(cyclic.is_empty());
    }

    #[test]
    fn one_table_is_in_order_even_when_it_references_itself() {
        assert_eq!(vecs2(parents_first(&[&COMMENT], &[0])), (vec![0], vec![]));
        assert_eq!(vecs3(flush_order(&[&COMMENT])), (vec![0], vec![], vec![0]));
    }

    #[test]
    fn the_flush_order_defers_only_what_breaks_a_cycle() {
        assert_eq!(vecs3(flush_order(&[&COMMENT, &POST, &USER])), (vec![2, 1, 0], vec![], vec![0, 0, 0]));
        // Neither A.b_id nor B.a_id is nullable: the cycle stays, reported.
        assert_eq!(vecs3(flush_order(&[&A, &USER, &B])), (vec![1, 0, 2], vec![0, 2], vec![0, 0, 0]));
    }
}
