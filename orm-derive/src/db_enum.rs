//! Expands `#[derive(DbEnum)]`: a fieldless enum stored as text.

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
    errors.finish()?;

    let name = ident.to_string();
    let to_text = variants.iter().map(|(variant, text)| quote!(#ident::#variant => #text));
    let from_text =
        variants.iter().map(|(variant, text)| quote!(#text => ::core::result::Result::Ok(#ident::#variant)));
    let pg = quote!(::orm_core::__private::postgres_types);
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
                <&str as #pg::ToSql>::to_sql(&self.as_db_str(), ty, out)
            }

            fn accepts(ty: &#pg::Type) -> bool {
                <&str as #pg::ToSql>::accepts(ty)
            }

            #pg::to_sql_checked!();
        }

        #[automatically_derived]
        impl<'a> #pg::FromSql<'a> for #ident {
            fn from_sql(
                ty: &#pg::Type,
                raw: &'a [u8],
            ) -> ::core::result::Result<Self, ::std::boxed::Box<dyn ::std::error::Error + Sync + Send>> {
                match <&str as #pg::FromSql>::from_sql(ty, raw)? {
                    #(#from_text,)*
                    other => ::core::result::Result::Err(::std::format!("{other:?} is not a {}", #name).into()),
                }
            }

            fn accepts(ty: &#pg::Type) -> bool {
                <&str as #pg::FromSql>::accepts(ty)
            }
        }

        #[automatically_derived]
        impl ::orm_core::ColumnType for #ident {
            const SQL_TYPE: &'static str = "text";
            type Value = Self;
        }
    })
}
