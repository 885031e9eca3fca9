//! Parses `#[orm(...)]` attributes into a model of the entity, collecting
//! every error with its span instead of stopping at the first one.

use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, Fields, Ident, LitStr, Type};

use crate::case::snake_case;

/// Errors found so far; turned into one compile error listing them all.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(existing) => existing.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }

    /// Ends parsing with `error` and every error found before it.
    pub(crate) fn fail(mut self, error: syn::Error) -> syn::Error {
        self.push(error);
        self.0.unwrap_or_else(|| syn::Error::new(proc_macro2::Span::call_site(), "invalid entity"))
    }
}

pub(crate) struct EntityModel<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) table: String,
    pub(crate) fields: Vec<FieldModel<'a>>,
    /// `#[orm(foreign_key(...))]`: foreign keys over several columns.
    pub(crate) foreign_keys: Vec<ForeignKey>,
}

/// A foreign key over several fields to an entity with a composite key:
/// `#[orm(foreign_key(fields(a, b), references = Parent, relation = "..."))]`.
pub(crate) struct ForeignKey {
    /// The fields, in the order of the parent's key columns.
    pub(crate) fields: Vec<Ident>,
    pub(crate) reference: Reference,
}

pub(crate) struct FieldModel<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) ty: &'a Type,
    pub(crate) column: String,
    pub(crate) sql_type: Option<LitStr>,
    pub(crate) primary_key: bool,
    pub(crate) generated: bool,
    pub(crate) version: bool,
    pub(crate) skip: bool,
    /// `soft_delete`: the marker column of a soft-deletable entity.
    pub(crate) soft_delete: bool,
    /// `tenant`: the column a tenant's session scopes loads and writes by.
    pub(crate) tenant: bool,
    /// `references = Parent`: this column holds a parent entity's key.
    pub(crate) references: Option<Reference>,
}

/// A foreign key to another entity, and the relation constant it generates.
pub(crate) struct Reference {
    pub(crate) parent: syn::Path,
    /// The relation constant's name: `relation = "..."`, else the field's
    /// name without its `_id` suffix.
    pub(crate) relation: String,
    /// `on_delete = "cascade"`: deleting a parent deletes its loaded children.
    pub(crate) cascade: bool,
}

/// Sets a flag, reporting a repeated attribute.
fn set_flag(flag: &mut bool, meta: &syn::meta::ParseNestedMeta<'_>, errors: &mut Errors) {
    if *flag {
        errors.push(meta.error("duplicate attribute"));
    }
    *flag = true;
}

/// Sets an attribute's value, reporting a repeated attribute.
fn set_value<T>(slot: &mut Option<T>, value: T, meta: &syn::meta::ParseNestedMeta<'_>, errors: &mut Errors) {
    if slot.replace(value).is_some() {
        errors.push(meta.error("duplicate attribute"));
    }
}

/// Why `sql_type` cannot be used in the casts it is spliced into
/// (`$1::<type>[]`), if it cannot: anything that could end the cast, and a
/// length or precision, which an explicit cast applies by silently cutting
/// or rounding values that writing them to the column would refuse.
fn sql_type_problem(sql_type: &str) -> Option<&'static str> {
    let normalized = sql_type.trim().to_ascii_lowercase();
    // An array column's type (`varchar[]`) is its element type's name and `[]`.
    let normalized = normalized.strip_suffix("[]").map_or(normalized.as_str(), str::trim_end).to_owned();
    if normalized.is_empty()
        || !normalized.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ' ' | '.' | '"'))
    {
        return Some(if normalized.contains('(') {
            "`sql_type` takes no length or precision: casting to varchar(255) or numeric(10, 2) would silently cut or round values the column refuses; write \"varchar\" or \"numeric\" (the column still checks them)"
        } else {
            "`sql_type` must be a PostgreSQL type name, like \"varchar\" or \"timestamptz\""
        });
    }
    if matches!(normalized.as_str(), "char" | "character" | "bit") {
        return Some(
            "a bare `char` or `bit` is a length of one, and casting to it would cut values: write \"bpchar\" or \"varbit\"",
        );
    }
    None
}

fn orm_attributes(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("orm"))
}

pub(crate) fn parse_entity(input: &DeriveInput) -> syn::Result<EntityModel<'_>> {
    let mut errors = Errors::default();
    let mut table = None;
    let mut foreign_keys = Vec::new();
    for attr in orm_attributes(&input.attrs) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("table") {
                let value: LitStr = meta.value()?.parse()?;
                if table.replace(value.value()).is_some() {
                    errors.push(meta.error("duplicate attribute"));
                }
                Ok(())
            } else if meta.path.is_ident("foreign_key") {
                if let Some(foreign_key) = parse_foreign_key(&meta, &mut errors)? {
                    foreign_keys.push(foreign_key);
                }
                Ok(())
            } else {
                Err(meta.error(
                    "unknown entity attribute; expected `table = \"...\"` or `foreign_key(fields(...), references = Entity, relation = \"...\")`",
                ))
            }
        });
        if let Err(error) = parsed {
            errors.push(error);
        }
    }

    let named = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(named) => Some(named),
            _ => None,
        },
        _ => None,
    };
    let Some(named) = named else {
        return Err(errors
            .fail(syn::Error::new(input.ident.span(), "Entity can only be derived for a struct with named fields")));
    };
    if !input.generics.params.is_empty() {
        errors.push(syn::Error::new(input.generics.span(), "an entity cannot have generic parameters"));
    }

    let mut fields = Vec::new();
    for field in &named.named {
        if let Some(model) = parse_field(field, &mut errors) {
            fields.push(model);
        }
    }

    let columns: Vec<&FieldModel<'_>> = fields.iter().filter(|f| !f.skip).collect();
    // After an attribute error the key may be in the attribute that failed
    // (`#[orm(primary)]`): reporting it missing too would only add noise.
    if errors.0.is_none() && columns.iter().all(|f| !f.primary_key) {
        errors.push(syn::Error::new(
            input.ident.span(),
            "an entity needs a primary key: mark a field `#[orm(primary_key)]`",
        ));
    }
    for extra in columns.iter().filter(|f| f.version).skip(1) {
        errors.push(syn::Error::new(extra.ident.span(), "an entity can have only one `version` column"));
    }
    for extra in columns.iter().filter(|f| f.soft_delete).skip(1) {
        errors.push(syn::Error::new(extra.ident.span(), "an entity can have only one `soft_delete` column"));
    }
    for extra in columns.iter().filter(|f| f.tenant).skip(1) {
        errors.push(syn::Error::new(extra.ident.span(), "an entity can have only one `tenant` column"));
    }
    for (n, field) in columns.iter().enumerate() {
        if columns[..n].iter().any(|earlier| earlier.column == field.column) {
            errors.push(syn::Error::new(
                field.ident.span(),
                format!("another field is already mapped to column `{}`", field.column),
            ));
        }
    }
    if !columns.is_empty() && columns.iter().all(|f| f.generated) {
        errors.push(syn::Error::new(input.ident.span(), "an entity needs at least one column that is not `generated`"));
    }
    if columns.len() > 64 {
        errors.push(syn::Error::new(input.ident.span(), "an entity can map at most 64 columns"));
    }
    check_foreign_keys(&foreign_keys, &columns, &mut errors);
    errors.finish()?;
    Ok(EntityModel {
        ident: &input.ident,
        table: table.unwrap_or_else(|| snake_case(&input.ident.to_string())),
        fields,
        foreign_keys,
    })
}

/// The parts of an attribute that name a relation, alike on a
/// `references` field and in a struct-level `foreign_key`: `references =
/// Parent`, `relation = "..."`, `on_delete = "cascade"`.
#[derive(Default)]
struct RelationParts {
    parent: Option<syn::Path>,
    relation: Option<String>,
    cascade: bool,
}

impl RelationParts {
    /// Reads `meta` if it is one of the relation's parts; `false` when it
    /// is another attribute, for the caller to read.
    fn parse(&mut self, meta: &syn::meta::ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<bool> {
        if meta.path.is_ident("references") {
            let path = meta.value()?.parse()?;
            set_value(&mut self.parent, path, meta, errors);
        } else if meta.path.is_ident("relation") {
            let name = meta.value()?.parse::<LitStr>()?.value();
            set_value(&mut self.relation, name, meta, errors);
        } else if meta.path.is_ident("on_delete") {
            let action: LitStr = meta.value()?.parse()?;
            if action.value() != "cascade" {
                return Err(syn::Error::new(action.span(), "the only `on_delete` action is \"cascade\""));
            }
            set_flag(&mut self.cascade, meta, errors);
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

/// Parses `foreign_key(fields(a, b), references = Parent, relation = "...",
/// on_delete = "cascade")`; `None` when a part is missing (reported).
fn parse_foreign_key(meta: &syn::meta::ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<Option<ForeignKey>> {
    let mut fields: Option<Vec<Ident>> = None;
    let mut parts = RelationParts::default();
    meta.parse_nested_meta(|inner| {
        if inner.path.is_ident("fields") {
            let mut listed = Vec::new();
            inner.parse_nested_meta(|field| {
                listed.push(field.path.require_ident()?.clone());
                Ok(())
            })?;
            set_value(&mut fields, listed, &inner, errors);
        } else if !parts.parse(&inner, errors)? {
            return Err(inner.error(
                "unknown `foreign_key` attribute; expected `fields(...)`, `references = Entity`, `relation = \"...\"`, `on_delete = \"cascade\"`",
            ));
        }
        Ok(())
    })?;
    let RelationParts { parent, relation, cascade } = parts;
    let missing = match (&fields, &parent, &relation) {
        (None, ..) => Some("`fields(...)`, the fields holding the parent's key in its order"),
        (_, None, _) => Some("`references = Entity`"),
        (_, _, None) => Some("`relation = \"...\"`, the relation's name"),
        _ => None,
    };
    if let Some(missing) = missing {
        errors.push(meta.error(format!("a `foreign_key` needs {missing}")));
        return Ok(None);
    }
    let (Some(fields), Some(parent), Some(relation)) = (fields, parent, relation) else { return Ok(None) };
    if fields.len() < 2 {
        errors.push(meta.error(
            "a `foreign_key` lists two or more fields; a foreign key of one field is `#[orm(references = Entity)]` on the field",
        ));
        return Ok(None);
    }
    Ok(Some(ForeignKey { fields, reference: Reference { parent, relation, cascade } }))
}

/// Reports `foreign_key` fields that are not columns of the entity, listed
/// twice, or whose first field already stands for another relation (the
/// session tells relations apart by their first column).
fn check_foreign_keys(foreign_keys: &[ForeignKey], columns: &[&FieldModel<'_>], errors: &mut Errors) {
    for (n, foreign_key) in foreign_keys.iter().enumerate() {
        for (i, field) in foreign_key.fields.iter().enumerate() {
            if !columns.iter().any(|column| column.ident == field) {
                errors.push(syn::Error::new(
                    field.span(),
                    format!("`foreign_key` lists `{field}`, which is not a column field of this struct"),
                ));
            } else if foreign_key.fields[..i].contains(field) {
                errors.push(syn::Error::new(field.span(), format!("`foreign_key` lists `{field}` twice")));
            }
        }
        let first = &foreign_key.fields[0];
        let first_of_other = foreign_keys[..n].iter().any(|other| other.fields[0] == *first);
        let references = columns.iter().any(|column| column.ident == first && column.references.is_some());
        if first_of_other || references {
            errors.push(syn::Error::new(
                first.span(),
                format!(
                    "`{first}` already begins another relation (a `references` field or another `foreign_key`); \
                     a field can begin only one"
                ),
            ));
        }
    }
}

/// Parses one field's `#[orm(...)]` attributes into its model, reporting
/// errors into `errors`.
fn parse_field<'a>(field: &'a syn::Field, errors: &mut Errors) -> Option<FieldModel<'a>> {
    let ident = field.ident.as_ref()?;
    let mut model = FieldModel {
        ident,
        ty: &field.ty,
        column: ident.to_string().trim_start_matches("r#").to_owned(),
        sql_type: None,
        primary_key: false,
        generated: false,
        version: false,
        skip: false,
        soft_delete: false,
        tenant: false,
        references: None,
    };
    let mut column: Option<String> = None;
    let mut parts = RelationParts::default();
    for attr in orm_attributes(&field.attrs) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("primary_key") {
                set_flag(&mut model.primary_key, &meta, errors);
            } else if meta.path.is_ident("generated") {
                set_flag(&mut model.generated, &meta, errors);
            } else if meta.path.is_ident("version") {
                set_flag(&mut model.version, &meta, errors);
            } else if meta.path.is_ident("skip") {
                set_flag(&mut model.skip, &meta, errors);
            } else if meta.path.is_ident("soft_delete") {
                set_flag(&mut model.soft_delete, &meta, errors);
            } else if meta.path.is_ident("tenant") {
                set_flag(&mut model.tenant, &meta, errors);
            } else if meta.path.is_ident("column") {
                let name: LitStr = meta.value()?.parse()?;
                if name.value().is_empty() {
                    return Err(syn::Error::new(name.span(), "a column name cannot be empty"));
                }
                set_value(&mut column, name.value(), &meta, errors);
            } else if meta.path.is_ident("sql_type") {
                let sql_type: LitStr = meta.value()?.parse()?;
                if let Some(problem) = sql_type_problem(&sql_type.value()) {
                    return Err(syn::Error::new(sql_type.span(), problem));
                }
                set_value(&mut model.sql_type, sql_type, &meta, errors);
            } else if !parts.parse(&meta, errors)? {
                return Err(meta.error(
                    "unknown field attribute; expected one of `primary_key`, `generated`, `version`, `skip`, `soft_delete`, `tenant`, `column = \"...\"`, `sql_type = \"...\"`, `references = Entity`, `relation = \"...\"`, `on_delete = \"cascade\"`",
                ));
            }
            Ok(())
        });
        if let Err(error) = parsed {
            errors.push(error);
        }
    }
    if let Some(column) = column {
        model.column = column;
    }
    let RelationParts { parent, relation: relation_name, cascade } = parts;
    match parent {
        Some(parent) => {
            let field_name = ident.to_string();
            let relation = relation_name.or_else(|| field_name.strip_suffix("_id").map(str::to_owned));
            match relation {
                Some(relation) => model.references = Some(Reference { parent, relation, cascade }),
                None => errors.push(syn::Error::new(
                    ident.span(),
                    "name the relation of a `references` field not ending in `_id`: `relation = \"...\"`",
                )),
            }
        }
        None if relation_name.is_some() || cascade => {
            errors.push(syn::Error::new(ident.span(), "`relation` and `on_delete` need `references = Entity`"));
        }
        None => {}
    }
    if model.skip
        && (model.primary_key
            || model.generated
            || model.version
            || model.sql_type.is_some()
            || model.soft_delete
            || model.tenant
            || model.references.is_some())
    {
        errors.push(syn::Error::new(ident.span(), "a `skip` field is not a column and takes no other attribute"));
    }
    if model.version && (model.primary_key || model.generated) {
        errors.push(syn::Error::new(ident.span(), "a `version` column cannot be a key or generated"));
    }
    if model.soft_delete && (model.primary_key || model.generated || model.version || model.tenant) {
        errors.push(syn::Error::new(
            ident.span(),
            "a `soft_delete` marker cannot be a key, generated, a version or the tenant",
        ));
    }
    if model.tenant && (model.generated || model.version) {
        errors.push(syn::Error::new(ident.span(), "a `tenant` column cannot be generated or a version"));
    }
    Some(model)
}
