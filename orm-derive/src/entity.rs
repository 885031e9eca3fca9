//! Expands `#[derive(Entity)]` into the `orm_core::Entity` impl and the typed
//! column constants.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Index};

use crate::attr::{parse_entity, FieldModel, ForeignKey};

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let model = parse_entity(input)?;
    let ident = model.ident;
    let name = ident.to_string();
    let table = &model.table;
    let columns: Vec<&FieldModel<'_>> = model.fields.iter().filter(|f| !f.skip).collect();
    let keys: Vec<&FieldModel<'_>> = columns.iter().copied().filter(|f| f.primary_key).collect();
    let composites = composites(&model.foreign_keys, &columns)?;

    // Every use of a field's type goes through `ColumnType` at the field's
    // span, so an unsupported type is one error pointing at the field.
    let column_meta = column_meta(&columns, &composites);

    let decode_fields = columns.iter().enumerate().map(|(i, f)| {
        let field = f.ident;
        let column = &f.column;
        let ty = f.ty;
        quote_spanned! {ty.span()=>
            #field: <#ty as ::orm_core::ColumnType>::decode_column(row, offset + #i, #name, #column)?
        }
    });
    let default_fields = model.fields.iter().filter(|f| f.skip).map(|f| {
        let field = f.ident;
        quote_spanned!(f.ty.span()=> #field: ::core::default::Default::default())
    });

    let key_methods = key_methods(&name, &keys);
    let scalar_keys = scalar_keys(&keys);

    let column_access = column_access(&name, &columns);
    let change_checks = columns.iter().enumerate().map(|(i, f)| {
        let (field, ty) = (f.ident, f.ty);
        quote!(if !<#ty as ::orm_core::ColumnType>::same_value(&self.#field, &snapshot.#field) { changed |= 1 << #i; })
    });
    let value_methods = value_methods(&name, &columns);
    let filter_fields = filter_fields(&columns);
    let soft_delete_check = soft_delete_check(&columns);

    let constants = column_constants(ident, &columns);
    let relations = relation_constants(ident, &columns, &composites);
    let reference_checks = reference_checks(&columns, &composites);
    let reference_hashes = reference_hashes(&columns, &composites);

    Ok(quote! {
        #[automatically_derived]
        impl ::orm_core::Entity for #ident {

            const META: &'static ::orm_core::EntityMeta = &::orm_core::EntityMeta {
                name: #name,
                table: #table,
                columns: &[#column_meta],
            };

            fn from_row(row: &::orm_core::__private::Row, offset: usize) -> ::orm_core::Result<Self> {
                ::core::result::Result::Ok(Self { #(#decode_fields,)* #(#default_fields,)* })
            }

            #key_methods

            #column_access

            #value_methods

            // Change detection wants exact equality, also for float fields.
            #[allow(clippy::float_cmp)]
            fn changed_columns(&self, snapshot: &Self) -> ::orm_core::ColumnSet {
                let mut changed: ::orm_core::ColumnSet = 0;
                #(#change_checks)*
                changed
            }

            fn statements() -> &'static ::orm_core::__private::EntityStatements {
                static STATEMENTS: ::orm_core::__private::EntityStatements =
                    ::orm_core::__private::EntityStatements::new();
                &STATEMENTS
            }

            fn references_key(&self, column: usize, key: &dyn ::core::any::Any) -> bool {
                #reference_checks
            }

            fn reference_hash(&self, column: usize) -> ::core::option::Option<u64> {
                #reference_hashes
            }

            #filter_fields
        }

        #scalar_keys
        #soft_delete_check
        #constants
        #relations
    })
}

/// The methods that set fields from the database or from each other:
/// generated columns read back, the version counter, values rounded as
/// stored.
fn value_methods(name: &str, columns: &[&FieldModel<'_>]) -> TokenStream {
    let generated = columns.iter().filter(|f| f.generated).enumerate().map(|(n, f)| {
        let field = f.ident;
        let column = &f.column;
        let ty = f.ty;
        quote_spanned!(ty.span()=> self.#field = <#ty as ::orm_core::ColumnType>::decode_column(row, #n, #name, #column)?;)
    });
    let version = columns.iter().filter(|f| f.version).map(|f| {
        let field = f.ident;
        let ty = f.ty;
        quote_spanned!(ty.span()=> ::orm_core::__private::increment_version::<#ty>(&mut self.#field);)
    });
    let round_to_stored = columns.iter().map(|f| {
        let field = f.ident;
        let ty = f.ty;
        quote_spanned!(ty.span()=> <#ty as ::orm_core::ColumnType>::round_to_stored(&mut self.#field);)
    });
    let copy_columns = columns.iter().enumerate().map(|(i, f)| {
        let field = f.ident;
        quote!(if columns & (1 << #i) != 0 { self.#field = ::core::clone::Clone::clone(&from.#field); })
    });
    quote! {
        fn set_generated(&mut self, row: &::orm_core::__private::Row) -> ::orm_core::Result<()> {
            #(#generated)*
            let _ = row;
            ::core::result::Result::Ok(())
        }

        fn increment_version(&mut self) {
            #(#version)*
        }

        fn round_to_stored(&mut self) {
            #(#round_to_stored)*
        }

        fn copy_columns(&mut self, from: &Self, columns: ::orm_core::ColumnSet) {
            #(#copy_columns)*
        }
    }
}

/// Refuses an array as a key column, at compile time: keys are matched
/// and loaded with one array parameter of many keys (`= ANY($1)`), which
/// an array of arrays cannot be.
fn scalar_keys(keys: &[&FieldModel<'_>]) -> TokenStream {
    let checks = keys.iter().map(|f| {
        let ty = f.ty;
        quote_spanned! {ty.span()=>
            const _: () = ::core::assert!(
                <#ty as ::orm_core::ColumnType>::BATCH_TYPE.is_none(),
                "a primary key column cannot be an array"
            );
        }
    });
    quote!(#(#checks)*)
}

/// The methods that reach one column by its index: its values as
/// parameters, whether its field can be read from a database type, and
/// whether a row's value is NULL.
fn column_access(name: &str, columns: &[&FieldModel<'_>]) -> TokenStream {
    let arrays = columns.iter().enumerate().map(|(i, f)| {
        let field = f.ident;
        let ty = f.ty;
        quote_spanned!(ty.span()=> #i => <#ty as ::orm_core::ColumnType>::batch_param(rows.iter().map(|row| &row.#field)))
    });
    let values = columns.iter().enumerate().map(|(i, f)| {
        let field = f.ident;
        let ty = f.ty;
        quote_spanned!(ty.span()=> #i => <#ty as ::orm_core::ColumnType>::column_param(&self.#field))
    });
    let accepts = columns.iter().enumerate().map(|(i, f)| {
        let ty = f.ty;
        quote_spanned!(ty.span()=> #i => <#ty as ::orm_core::ColumnType>::accepts_column(ty))
    });
    let writes = columns.iter().enumerate().map(|(i, f)| {
        let field = f.ident;
        let ty = f.ty;
        quote_spanned!(ty.span()=> #i => <#ty as ::orm_core::ColumnType>::write_value(&self.#field, ty, out))
    });
    let nulls = columns.iter().enumerate().map(|(i, f)| {
        let field = f.ident;
        let ty = f.ty;
        quote_spanned!(ty.span()=> #i => <#ty as ::orm_core::ColumnType>::is_null(&self.#field))
    });
    quote! {
        fn column_array(rows: &[&Self], column: usize) -> ::orm_core::Param {
            match column {
                #(#arrays,)*
                _ => ::orm_core::__private::no_such_column(#name, column),
            }
        }

        fn column_value(&self, column: usize) -> ::orm_core::Param {
            match column {
                #(#values,)*
                _ => ::orm_core::__private::no_such_column(#name, column),
            }
        }

        fn write_column(
            &self,
            column: usize,
            ty: &::orm_core::__private::Type,
            out: &mut ::orm_core::__private::BytesMut,
        ) -> ::core::result::Result<
            ::orm_core::__private::postgres_types::IsNull,
            ::std::boxed::Box<dyn ::std::error::Error + ::core::marker::Sync + ::core::marker::Send>,
        > {
            match column {
                #(#writes,)*
                _ => ::orm_core::__private::no_such_column(#name, column),
            }
        }

        fn accepts(column: usize, ty: &::orm_core::__private::Type) -> bool {
            match column {
                #(#accepts,)*
                _ => false,
            }
        }

        fn column_is_null(&self, column: usize) -> bool {
            match column {
                #(#nulls,)*
                _ => false,
            }
        }
    }
}

/// The `Key` type and the methods that build, read and bind keys: a plain
/// value for one key column, a tuple for a composite key.
fn key_methods(name: &str, keys: &[&FieldModel<'_>]) -> TokenStream {
    let key_types: Vec<_> = keys.iter().map(|f| f.ty).collect();
    let key_fields: Vec<_> = keys.iter().map(|f| f.ident).collect();
    let key_columns: Vec<_> = keys.iter().map(|f| &f.column).collect();
    let (key_type, key_value, key_params, key_arrays, key_from_row, keys_from_arrays, set_key);
    if let [single] = keys {
        let ty = single.ty;
        let field = single.ident;
        let column = &single.column;
        key_type = quote!(#ty);
        key_value = quote!(::core::clone::Clone::clone(&self.#field));
        key_params = quote_spanned!(ty.span()=> ::std::vec![<#ty as ::orm_core::ColumnType>::column_param(key)]);
        key_arrays = quote_spanned!(ty.span()=> ::std::vec![<#ty as ::orm_core::ColumnType>::batch_param(keys.iter())]);
        key_from_row =
            quote_spanned!(ty.span()=> <#ty as ::orm_core::ColumnType>::decode_column(row, 0, #name, #column));
        keys_from_arrays =
            quote_spanned!(ty.span()=> <#ty as ::orm_core::ColumnType>::decode_array(row, 0, #name, #column));
        set_key = quote!(self.#field = key;);
    } else {
        let positions: Vec<Index> = (0..keys.len()).map(Index::from).collect();
        let offsets = 0..keys.len();
        key_type = quote!((#(#key_types,)*));
        key_value = quote!((#(::core::clone::Clone::clone(&self.#key_fields),)*));
        key_params = quote!(::std::vec![#(<#key_types as ::orm_core::ColumnType>::column_param(&key.#positions)),*]);
        key_arrays = quote!(::std::vec![
            #(<#key_types as ::orm_core::ColumnType>::batch_param(keys.iter().map(|key| &key.#positions))),*
        ]);
        key_from_row = quote!(::core::result::Result::Ok((
            #(<#key_types as ::orm_core::ColumnType>::decode_column(row, #offsets, #name, #key_columns)?,)*
        )));
        let parts: Vec<_> = (0..keys.len()).map(|n| format_ident!("part{n}")).collect();
        let offsets = 0..keys.len();
        // The shortest array ends the keys; the caller checks their number.
        keys_from_arrays = quote! {
            let mut columns = (#(<#key_types as ::orm_core::ColumnType>::decode_array(row, #offsets, #name, #key_columns)?.into_iter(),)*);
            let mut keys = ::std::vec::Vec::new();
            while let (#(::core::option::Option::Some(#parts),)*) = (#(columns.#positions.next(),)*) {
                keys.push((#(#parts,)*));
            }
            ::core::result::Result::Ok(keys)
        };
        set_key = quote! {
            let (#(#parts,)*) = key;
            #(self.#key_fields = #parts;)*
        };
    }

    quote! {
        type Key = #key_type;

        fn key(&self) -> Self::Key {
            #key_value
        }

        fn key_from_row(row: &::orm_core::__private::Row) -> ::orm_core::Result<Self::Key> {
            #key_from_row
        }

        fn key_params(key: &Self::Key) -> ::std::vec::Vec<::orm_core::Param> {
            #key_params
        }

        fn key_arrays(keys: &[Self::Key]) -> ::std::vec::Vec<::orm_core::Param> {
            #key_arrays
        }

        fn keys_from_arrays(row: &::orm_core::__private::Row) -> ::orm_core::Result<::std::vec::Vec<Self::Key>> {
            #keys_from_arrays
        }

        fn set_key(&mut self, key: Self::Key) {
            #set_key
        }
    }
}

/// The typed column constants (`Customer::NAME`) used in filters and ordering.
fn column_constants(ident: &syn::Ident, columns: &[&FieldModel<'_>]) -> TokenStream {
    let constants = columns.iter().map(|f| {
        let constant = format_ident!("{}", column_constant_name(f), span = f.ident.span());
        let column = &f.column;
        let ty = f.ty;
        let doc = format!("The `{column}` column, for filters and ordering.");
        quote_spanned! {ty.span()=>
            #[doc = #doc]
            pub const #constant: ::orm_core::Column<#ident, <#ty as ::orm_core::ColumnType>::Value> =
                ::orm_core::Column::new(#column);
        }
    });

    quote! {
        // One constant per column whether the application filters on it or
        // not: an unused one is not dead code to warn about.
        #[automatically_derived]
        #[allow(dead_code)]
        impl #ident {
            #(#constants)*
        }
    }
}

/// A `foreign_key` over several fields, with the column indexes of its
/// fields in the parent's key order (the first standing for the relation).
struct Composite<'a> {
    foreign_key: &'a ForeignKey,
    columns: Vec<usize>,
}

impl<'a> Composite<'a> {
    /// The parser checked that every field of `foreign_key` is a column.
    fn new(foreign_key: &'a ForeignKey, columns: &[&FieldModel<'_>]) -> Self {
        let columns = foreign_key
            .fields
            .iter()
            .filter_map(|field| columns.iter().position(|column| column.ident == field))
            .collect();
        Composite { foreign_key, columns }
    }

    fn anchor(&self) -> usize {
        self.columns[0]
    }

    fn constant(&self) -> syn::Ident {
        let name = self.foreign_key.reference.relation.to_uppercase();
        format_ident!("{}", name, span = self.foreign_key.fields[0].span())
    }
}

/// The entity's `foreign_key`s, once their relation constants are known
/// not to clash with another constant.
fn composites<'a>(foreign_keys: &'a [ForeignKey], columns: &[&FieldModel<'_>]) -> syn::Result<Vec<Composite<'a>>> {
    let composites: Vec<Composite<'a>> = foreign_keys.iter().map(|fk| Composite::new(fk, columns)).collect();
    check_constant_clashes(columns, &composites)?;
    Ok(composites)
}

/// The `Relation` constant of each `foreign_key` over several fields
/// (`OrderLine::ORDER`): the fields are read and set as one tuple, the
/// parent's key.
fn composite_relation_constants(
    ident: &syn::Ident,
    columns: &[&FieldModel<'_>],
    composites: &[Composite<'_>],
) -> TokenStream {
    let relations = composites.iter().map(|composite| {
        let reference = &composite.foreign_key.reference;
        let parent = &reference.parent;
        let name = &reference.relation;
        let fields = &composite.foreign_key.fields;
        let indexes = &composite.columns;
        let constant = composite.constant();
        let doc = format!(
            "The `{name}` relation: `{}` reference [`{}`].",
            fields.iter().map(ToString::to_string).collect::<Vec<_>>().join("`, `"),
            quote!(#parent).to_string().replace(' ', "")
        );
        let key = quote!(<#parent as ::orm_core::Entity>::Key);
        let types = composite.columns.iter().map(|&i| columns[i].ty);
        // At the fields, as every other use: a key that does not fit is
        // then one error there.
        let fields_type = quote_spanned!(fields[0].span()=> (#(#types,)*));
        quote_spanned! {fields[0].span()=>
            #[doc = #doc]
            pub const #constant: ::orm_core::Relation<#ident, #parent> = ::orm_core::Relation::new(
                #name,
                &[#(#indexes),*],
                |child| <#fields_type as ::orm_core::__private::ForeignKeyFields<#key>>::key((#(&child.#fields,)*)),
                |child, key| {
                    <#fields_type as ::orm_core::__private::ForeignKeyFields<#key>>::set_key((#(&mut child.#fields,)*), key)
                },
            );
        }
    });
    quote!(#(#relations)*)
}

/// One `Relation` constant per `references` field (`Post::AUTHOR`) and per
/// `foreign_key`, typed with both entities, for linking, batch loading and
/// filters.
fn relation_constants(ident: &syn::Ident, columns: &[&FieldModel<'_>], composites: &[Composite<'_>]) -> TokenStream {
    let relations = columns.iter().enumerate().filter_map(|(i, f)| {
        let reference = f.references.as_ref()?;
        let parent = &reference.parent;
        let field = f.ident;
        let name = &reference.relation;
        let constant = format_ident!("{}", name.to_uppercase(), span = f.ident.span());
        let doc = format!(
            "The `{name}` relation: `{field}` references [`{}`].",
            quote!(#parent).to_string().replace(' ', "")
        );
        let key = quote!(<#parent as ::orm_core::Entity>::Key);
        Some(quote_spanned! {f.ty.span()=>
            #[doc = #doc]
            pub const #constant: ::orm_core::Relation<#ident, #parent> = ::orm_core::Relation::new(
                #name,
                &[#i],
                |child| ::orm_core::__private::ForeignKeyField::<#key>::key(&child.#field),
                |child, key| ::orm_core::__private::ForeignKeyField::<#key>::set_key(&mut child.#field, key),
            );
        })
    });
    let composite = composite_relation_constants(ident, columns, composites);
    quote! {
        #[automatically_derived]
        #[allow(dead_code)]
        impl #ident {
            #(#relations)*
            #composite
        }
    }
}

/// The body of `references_key`: whether a foreign-key field holds a key of
/// the referenced entity, the key arriving type-erased from a cascade.
fn reference_checks(columns: &[&FieldModel<'_>], composites: &[Composite<'_>]) -> TokenStream {
    let arms = columns.iter().enumerate().filter_map(|(i, f)| {
        let reference = f.references.as_ref()?;
        let parent = &reference.parent;
        let field = f.ident;
        Some(quote_spanned! {f.ty.span()=>
            #i => key.downcast_ref::<<#parent as ::orm_core::Entity>::Key>().is_some_and(|key| {
                ::orm_core::__private::ForeignKeyField::<<#parent as ::orm_core::Entity>::Key>::key(&self.#field).as_ref()
                    == ::core::option::Option::Some(key)
            })
        })
    });
    // A composite foreign key is read through its relation constant.
    let composite_arms = composites.iter().map(|composite| {
        let anchor = composite.anchor();
        let constant = composite.constant();
        let parent = &composite.foreign_key.reference.parent;
        quote! {
            #anchor => key.downcast_ref::<<#parent as ::orm_core::Entity>::Key>().is_some_and(|key| {
                Self::#constant.parent_key(self).as_ref() == ::core::option::Option::Some(key)
            })
        }
    });
    quote! {
        match column {
            #(#arms,)*
            #(#composite_arms,)*
            _ => false,
        }
    }
}

/// The body of `reference_hash`: the hash of the parent key a foreign-key
/// field holds, taken as the parent's key type so that it equals the hash
/// of the parent's own key.
fn reference_hashes(columns: &[&FieldModel<'_>], composites: &[Composite<'_>]) -> TokenStream {
    let arms = columns.iter().enumerate().filter_map(|(i, f)| {
        let reference = f.references.as_ref()?;
        let parent = &reference.parent;
        let field = f.ident;
        Some(quote_spanned! {f.ty.span()=>
            #i => ::orm_core::__private::ForeignKeyField::<<#parent as ::orm_core::Entity>::Key>::key(&self.#field)
                .map(|key| ::orm_core::__private::key_hash(&key))
        })
    });
    let composite_arms = composites.iter().map(|composite| {
        let anchor = composite.anchor();
        let constant = composite.constant();
        quote!(#anchor => Self::#constant.parent_key(self).map(|key| ::orm_core::__private::key_hash(&key)))
    });
    quote! {
        match column {
            #(#arms,)*
            #(#composite_arms,)*
            _ => ::core::option::Option::None,
        }
    }
}

/// The `ColumnMeta` of each column, in field order.
fn column_meta(columns: &[&FieldModel<'_>], composites: &[Composite<'_>]) -> TokenStream {
    let metas = columns.iter().enumerate().map(|(i, f)| {
        let ty = f.ty;
        let column = &f.column;
        let field = f.ident.to_string();
        let sql_type = f.sql_type.as_ref().map_or_else(
            || quote_spanned!(ty.span()=> <#ty as ::orm_core::ColumnType>::SQL_TYPE),
            |literal| quote!(#literal),
        );
        let batch_type = quote_spanned!(ty.span()=> <#ty as ::orm_core::ColumnType>::BATCH_TYPE);
        let nullable = quote_spanned!(ty.span()=> <#ty as ::orm_core::ColumnType>::NULLABLE);
        let enum_labels = quote_spanned!(ty.span()=> <#ty as ::orm_core::ColumnType>::ENUM_LABELS);
        let (primary_key, generated, version) = (f.primary_key, f.generated, f.version);
        let (soft_delete, tenant) = (f.soft_delete, f.tenant);
        // A function, not the parent's META itself: entities that reference
        // each other (or themselves) would make constant evaluation cyclic.
        // The first column of a composite foreign key carries it; its
        // other columns are plain ones.
        let foreign_key = f.references.as_ref().map(|reference| (reference, vec![i])).or_else(|| {
            let composite = composites.iter().find(|composite| composite.anchor() == i)?;
            Some((&composite.foreign_key.reference, composite.columns.clone()))
        });
        let (references, cascade_delete, foreign_key_columns) = foreign_key.map_or_else(
            || (quote!(::core::option::Option::None), false, Vec::new()),
            |(reference, columns)| {
                let parent = &reference.parent;
                let references = quote!(::core::option::Option::Some(|| <#parent as ::orm_core::Entity>::META));
                (references, reference.cascade, columns)
            },
        );
        quote! {
            ::orm_core::ColumnMeta {
                name: #column, field: #field, sql_type: #sql_type, batch_type: #batch_type, nullable: #nullable,
                primary_key: #primary_key, generated: #generated, version: #version,
                references: #references, foreign_key_columns: &[#(#foreign_key_columns),*],
                cascade_delete: #cascade_delete, enum_labels: #enum_labels,
                soft_delete: #soft_delete, tenant: #tenant,
            }
        }
    });
    quote!(#(#metas),*)
}

/// Refuses, at compile time and at the field's type, a `soft_delete`
/// field that is not an `Option` of a timestamp or date.
fn soft_delete_check(columns: &[&FieldModel<'_>]) -> TokenStream {
    let checks = columns.iter().filter(|f| f.soft_delete).map(|f| {
        let ty = f.ty;
        quote_spanned!(ty.span()=> const _: () = ::orm_core::__private::soft_delete_field::<#ty>();)
    });
    quote!(#(#checks)*)
}

/// The tenant methods of a `tenant` field, at the field's type so that a
/// type that cannot be a tenant is an error there.
fn filter_fields(columns: &[&FieldModel<'_>]) -> TokenStream {
    let tenant = columns.iter().find(|f| f.tenant).map(|f| {
        let field = f.ident;
        let ty = f.ty;
        quote_spanned! {ty.span()=>
            fn tenant_is(&self, tenant: &dyn ::core::any::Any) -> ::core::option::Option<bool> {
                ::orm_core::__private::tenant_is::<#ty>(&self.#field, tenant)
            }

            fn fill_tenant(&mut self, tenant: &dyn ::core::any::Any) -> bool {
                ::orm_core::__private::fill_tenant::<#ty>(&mut self.#field, tenant)
            }
        }
    });
    quote!(#tenant)
}

/// The constant a column generates: its field's name in upper case.
fn column_constant_name(field: &FieldModel<'_>) -> String {
    field.ident.to_string().trim_start_matches("r#").to_uppercase()
}

/// Refuses a relation constant named like another generated constant
/// (`author` beside `author_id` with `references`), which would otherwise
/// be an unhelpful "duplicate definitions" error from the compiler.
fn check_constant_clashes(columns: &[&FieldModel<'_>], composites: &[Composite<'_>]) -> syn::Result<()> {
    let mut errors: Option<syn::Error> = None;
    let mut relations: Vec<(String, &syn::Ident)> = Vec::new();
    // A `foreign_key` is named after its first field here and in errors.
    let references = columns
        .iter()
        .filter_map(|field| Some((&field.references.as_ref()?.relation, field.ident)))
        .chain(composites.iter().map(|c| (&c.foreign_key.reference.relation, &c.foreign_key.fields[0])));
    for (relation, field) in references {
        let constant = relation.to_uppercase();
        let clash = columns
            .iter()
            .find(|other| column_constant_name(other) == constant)
            .map(|other| format!("the column constant of field `{}`", other.ident))
            .or_else(|| {
                relations
                    .iter()
                    .find(|(earlier, _)| *earlier == constant)
                    .map(|(_, other)| format!("the relation constant of field `{other}`"))
            });
        if let Some(clash) = clash {
            let error = syn::Error::new(
                field.span(),
                format!(
                    "the relation constant `{constant}` of this `references` field clashes with {clash}; \
                     name the relation with `relation = \"...\"`"
                ),
            );
            match &mut errors {
                Some(all) => all.combine(error),
                None => errors = Some(error),
            }
        }
        relations.push((constant, field));
    }
    errors.map_or(Ok(()), Err)
}
