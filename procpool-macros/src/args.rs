//! The attribute's own arguments: `#[procpool::task]` or
//! `#[procpool::task(crate = path::to::procpool)]`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;

/// What the attribute was given.
pub(crate) struct Args {
    /// The path the generated code names procpool by.
    pub(crate) krate: syn::Path,
}

pub(crate) fn parse(attr: TokenStream) -> syn::Result<Args> {
    let mut krate: Option<syn::Path> = None;
    let parser = syn::meta::parser(|meta: ParseNestedMeta<'_>| {
        if meta.path.is_ident("crate") {
            if krate.is_some() {
                return Err(meta.error("duplicate `crate` argument: give it once"));
            }
            krate = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error(
                "unknown argument: `#[procpool::task]` takes only \
                 `crate = path::to::procpool` (for a re-exported procpool)",
            ))
        }
    });
    parser.parse2(attr)?;
    Ok(Args {
        krate: krate.unwrap_or_else(|| syn::parse_quote!(::procpool)),
    })
}

impl Args {
    /// The `crate = "..."` string for the generated serde derives.
    pub(crate) fn serde_path(&self) -> String {
        let krate = &self.krate;
        quote!(#krate::__private::serde).to_string()
    }
}
