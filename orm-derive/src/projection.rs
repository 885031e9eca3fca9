//! Expands `#[derive(Projection)]`: a struct built from the tuple a
//! projection selects, field by field in order.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields};

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let ident = &input.ident;
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(ident.span(), "Projection can only be derived for a struct"));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new(ident.span(), "Projection needs a struct with named fields"));
    };
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(&input.generics, "Projection cannot be derived for a generic struct"));
    }
    let names: Vec<_> = fields.named.iter().filter_map(|f| f.ident.as_ref()).collect();
    let types: Vec<_> = fields.named.iter().map(|f| &f.ty).collect();
    let indexes = (0..names.len()).map(syn::Index::from);
    Ok(quote! {
        impl ::core::convert::From<(#(#types,)*)> for #ident {
            fn from(row: (#(#types,)*)) -> Self {
                #ident { #(#names: row.#indexes,)* }
            }
        }
    })
}
