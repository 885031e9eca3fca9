//! Expands `#[derive(DbEnum)]`: a fieldless enum stored as text, or as a
//! PostgreSQL enum type named by `#[orm(pg_type = "...")]`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields, LitStr};

use crate::attr::Errors;
use crate::case::snake_case;

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let ident = &input.ident;
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new(ident.span(), "DbEnum can only be derived for an enum"));
    };
    let mut errors = Errors::default();
    let pg_type = enum_type(input, &mut errors);
    let variants = parse_variants(data, &mut errors);
    errors.finish()?;

    let pg = quote!(::orm_core::__private::postgres_types);
    let name = ident.to_string();
    // A PostgreSQL enum's binary form is its label's text, so one encoding
    // serves both storages; only the types accepted differ.
    let texts = variants.iter().map(|(_, text)| text);
    let (sql_type, accepts, labels) = match &pg_type {
        Some(pg_type) => {
            let type_name = pg_type.value();
            let unqualified = type_name.rsplit('.').next().unwrap_or(&type_name).to_owned();
            (
                type_name,
                quote!(ty.name() == #unqualified || <&str as #pg::ToSql>::accepts(ty)),
                quote!(::core::option::Option::Some(&[#(#texts),*])),
            )
        }
        None => ("text".to_owned(), quote!(<&str as #pg::ToSql>::accepts(ty)), quote!(::core::option::Option::None)),
    };
    let to_text = variants.iter().map(|(variant, text)| quote!(#ident::#variant => #text));
    let from_text =
        variants.iter().map(|(variant, text)| quote!(#text => ::core::result::Result::Ok(#ident::#variant)));
    Ok(quote! {
        #[automatically_derived]
        impl #ident {
            /// The text this variant is stored as.
            pub fn as_db_str(&self) -> &'static str {
                match self { #(#to_text,)* }
            }
        }

        #[automatically_derived]
        impl #pg::ToSql for #ident {
            fn to_sql(
                &self,
                ty: &#pg::Type,
                out: &mut ::orm_core::__private::BytesMut,
            ) -> ::core::result::Result<#pg::IsNull, ::std::boxed::Box<dyn ::std::error::Error + Sync + Send>> {
                out.extend_from_slice(self.as_db_str().as_bytes());
                ::core::result::Result::Ok(#pg::IsNull::No)
            }

            fn accepts(ty: &#pg::Type) -> bool {
                #accepts
            }

            #pg::to_sql_checked!();
        }

        #[automatically_derived]
        impl<'a> #pg::FromSql<'a> for #ident {
            fn from_sql(
                ty: &#pg::Type,
                raw: &'a [u8],
            ) -> ::core::result::Result<Self, ::std::boxed::Box<dyn ::std::error::Error + Sync + Send>> {
                match ::core::str::from_utf8(raw)? {
                    #(#from_text,)*
                    other => ::core::result::Result::Err(::std::format!("{other:?} is not a {}", #name).into()),
                }
            }

            fn accepts(ty: &#pg::Type) -> bool {
                #accepts
            }
        }

        #[automatically_derived]
        impl ::orm_core::ArrayElement for #ident {
            fn write_element(&self, out: &mut ::std::string::String) {
                ::orm_core::__private::write_quoted(out, self.as_db_str());
            }
        }

        #[automatically_derived]
        impl ::orm_core::ColumnType for #ident {
            const SQL_TYPE: &'static str = #sql_type;
            const ENUM_LABELS: ::core::option::Option<&'static [&'static str]> = #labels;
            type Value = Self;
        }
    })
}

/// Each variant with the text it is stored as: its `rename`, else its
/// name in snake case. Fields, unknown attributes and two variants stored
/// as the same text are errors.
fn parse_variants<'a>(data: &'a syn::DataEnum, errors: &mut Errors) -> Vec<(&'a syn::Ident, String)> {
    let mut variants = Vec::new();
    for variant in &data.variants {
        if !matches!(variant.fields, Fields::Unit) {
            errors.push(syn::Error::new_spanned(&variant.fields, "a DbEnum variant cannot have fields"));
        }
        let mut rename: Option<LitStr> = None;
        for attr in variant.attrs.iter().filter(|a| a.path().is_ident("orm")) {
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename") {
                    if rename.replace(meta.value()?.parse()?).is_some() {
                        return Err(meta.error("duplicate attribute"));
                    }
                    Ok(())
                } else {
                    Err(meta.error("unknown variant attribute; expected `rename = \"...\"`"))
                }
            });
            if let Err(error) = parsed {
                errors.push(error);
            }
        }
        let text = rename.as_ref().map_or_else(|| snake_case(&variant.ident.to_string()), LitStr::value);
        if variants.iter().any(|(_, earlier)| *earlier == text) {
            let span = rename.as_ref().map_or_else(|| variant.ident.span(), LitStr::span);
            errors.push(syn::Error::new(span, format!("another variant is already stored as \"{text}\"")));
        }
        variants.push((&variant.ident, text));
    }
    variants
}

/// The PostgreSQL enum type named by `#[orm(pg_type = "...")]` on the
/// enum, if any: a type name, optionally schema-qualified, written into
/// casts as it is.
fn enum_type(input: &DeriveInput, errors: &mut Errors) -> Option<LitStr> {
    let mut pg_type: Option<LitStr> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("orm")) {
        let parsed = attr.parse_nested_meta(|meta| {
            if !meta.path.is_ident("pg_type") {
                return Err(meta.error("unknown DbEnum attribute; expected `pg_type = \"...\"`"));
            }
            let name: LitStr = meta.value()?.parse()?;
            let valid = |part: &str| {
                part.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                    && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            };
            if !name.value().split('.').all(valid) || name.value().split('.').count() > 2 {
                return Err(syn::Error::new(
                    name.span(),
                    "pg_type takes a lower-case type name, optionally schema-qualified (`mood`, `app.mood`)",
                ));
            }
            if pg_type.replace(name).is_some() {
                return Err(meta.error("duplicate attribute"));
            }
            Ok(())
        });
        if let Err(error) = parsed {
            errors.push(error);
        }
    }
    pg_type
}
