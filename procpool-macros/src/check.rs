//! What a task fn may not be, each with an error spanned on the offending
//! token that says what to write instead.
//!
//! A task fn's arguments and output travel between processes, so they must
//! be owned, concrete types; its arguments become the fields of the task
//! struct, so they need names.

use quote::ToTokens;
use syn::{
    FnArg, GenericArgument, GenericParam, Lifetime, Pat, PathArguments, ReturnType, Signature,
    Type, TypeParamBound,
};

/// Collects every problem, so the user sees them all in one build.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: impl ToTokens, message: impl std::fmt::Display) {
        let e = syn::Error::new_spanned(span, message);
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Checks the signature of a task fn.
pub(crate) fn signature(sig: &Signature) -> syn::Result<()> {
    let mut errors = Errors::default();
    if let Some(t) = &sig.constness {
        errors.push(
            t,
            "a task fn cannot be `const`: remove `const` (the pool calls it at run time \
             in a worker process)",
        );
    }
    if let syn::Safety::Unsafe(t) = &sig.safety {
        errors.push(
            t,
            "a task fn cannot be `unsafe`: a worker calls it with arguments decoded from a \
             pipe, so no caller can uphold a safety contract; make the fn safe and put an \
             `unsafe` block inside it",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.push(
            abi,
            "a task fn cannot be `extern`: remove the ABI (the pool calls it as a Rust fn; \
             to run a foreign fn, call it from a plain task fn)",
        );
    }
    if let Some(v) = &sig.variadic {
        errors.push(v, "a task fn cannot be variadic");
    }
    generics(sig, &mut errors);
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => errors.push(
                r,
                "a task fn cannot take `self`: put `#[procpool::task]` on a free fn, outside \
                 any `impl` block (its arguments become the fields of the task struct)",
            ),
            FnArg::Typed(arg) => {
                pattern(&arg.pat, &mut errors);
                owned(&arg.ty, Place::Argument, &mut errors);
            }
        }
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        owned(ty, Place::Output, &mut errors);
    }
    errors.finish()
}

fn generics(sig: &Signature, errors: &mut Errors) {
    for param in &sig.generics.params {
        match param {
            GenericParam::Lifetime(l) => errors.push(
                l,
                "a task fn cannot have lifetime parameters: its arguments are decoded in a \
                 worker process, so they must be owned (`String`, not `&'a str`)",
            ),
            GenericParam::Type(_) | GenericParam::Const(_) => errors.push(
                param,
                "a task fn cannot be generic: a worker must know the concrete type of every \
                 argument to decode it; write one task fn per type (each can call a shared \
                 generic fn)",
            ),
        }
    }
    if let Some(w) = &sig.generics.where_clause {
        errors.push(
            w,
            "a task fn cannot have a `where` clause: it cannot be generic, so name concrete \
             types",
        );
    }
}

fn pattern(pat: &Pat, errors: &mut Errors) {
    let plain = match pat {
        Pat::Ident(p) => p.by_ref.is_none() && p.subpat.is_none(),
        _ => false,
    };
    if !plain {
        errors.push(
            pat,
            "a task fn's arguments must be plain names (`name: Type`), because each becomes \
             a field of the task struct: name the argument and destructure it inside the body",
        );
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Place {
    Argument,
    Output,
}

impl Place {
    fn must_be_owned(self) -> &'static str {
        match self {
            Place::Argument => {
                "a task fn's arguments must be owned: they are sent to a worker process and \
                 decoded there"
            }
            Place::Output => {
                "a task fn must return an owned value: it is sent back to the host process"
            }
        }
    }

    fn take(self) -> &'static str {
        match self {
            Place::Argument => "take",
            Place::Output => "return",
        }
    }
}

/// Rejects borrowed and opaque types anywhere inside `ty`.
fn owned(ty: &Type, place: Place, errors: &mut Errors) {
    match ty {
        Type::Reference(r) => {
            let instead = owned_counterpart(&r.elem);
            errors.push(
                r,
                format!("{}; {} {instead}", place.must_be_owned(), place.take()),
            );
        }
        Type::ImplTrait(t) => {
            let message = match place {
                Place::Argument => {
                    "a task fn's arguments cannot be `impl Trait`: the worker must know the \
                     concrete type to decode it; name the type (`String`, `Vec<u8>`, ...)"
                }
                Place::Output => {
                    "a task fn cannot return `impl Trait`: the output is sent back to the \
                     host, so name its type (for an async task, write `async fn`)"
                }
            };
            errors.push(t, message);
        }
        Type::Infer(t) => errors.push(t, "a task fn needs its types written out: replace `_`"),
        Type::Path(p) => {
            if let Some(q) = &p.qself {
                owned(&q.ty, place, errors);
            }
            for segment in &p.path.segments {
                generic_arguments(&segment.arguments, place, errors);
            }
        }
        Type::Tuple(t) => t.elems.iter().for_each(|e| owned(e, place, errors)),
        Type::Array(t) => owned(&t.elem, place, errors),
        Type::Slice(t) => owned(&t.elem, place, errors),
        Type::Paren(t) => owned(&t.elem, place, errors),
        Type::Group(t) => owned(&t.elem, place, errors),
        Type::TraitObject(t) => bounds(t.bounds.iter(), place, errors),
        // Raw pointers, fn pointers, `!` and macros: serde and the
        // compiler say what is wrong with them.
        _ => {}
    }
}

fn generic_arguments(args: &PathArguments, place: Place, errors: &mut Errors) {
    match args {
        PathArguments::None => {}
        PathArguments::AngleBracketed(a) => {
            for arg in &a.args {
                match arg {
                    GenericArgument::Type(t) => owned(t, place, errors),
                    GenericArgument::Lifetime(l) => lifetime(l, place, errors),
                    GenericArgument::AssocType(t) => owned(&t.ty, place, errors),
                    _ => {}
                }
            }
        }
        PathArguments::Parenthesized(p) => {
            p.inputs.iter().for_each(|a| owned(&a.ty, place, errors));
            if let ReturnType::Type(_, t) = &p.output {
                owned(t, place, errors);
            }
        }
    }
}

fn bounds<'a>(bounds: impl Iterator<Item = &'a TypeParamBound>, place: Place, errors: &mut Errors) {
    for bound in bounds {
        if let TypeParamBound::Lifetime(l) = bound {
            lifetime(l, place, errors);
        }
    }
}

/// `'static` is owned enough (`Cow<'static, str>` decodes as owned); any
/// other lifetime borrows.
fn lifetime(l: &Lifetime, place: Place, errors: &mut Errors) {
    if l.ident != "static" {
        errors.push(
            l,
            format!(
                "{}; the lifetime `{l}` borrows: {} an owned type",
                place.must_be_owned(),
                place.take()
            ),
        );
    }
}

/// What to write instead of `&elem`.
fn owned_counterpart(elem: &Type) -> String {
    let last = match elem {
        Type::Slice(s) => {
            let elem = pretty(&s.elem);
            return format!("`Vec<{elem}>` instead of `&[{elem}]`");
        }
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    };
    let owned = match last.as_deref() {
        Some("str") => "String",
        Some("Path") => "PathBuf",
        Some("OsStr") => "OsString",
        Some("CStr") => "CString",
        _ => return format!("`{}` by value", pretty(elem)),
    };
    format!("`{owned}` instead of `&{}`", pretty(elem))
}

/// A type as a user would write it (`Vec<u8>`, not `Vec < u8 >`).
fn pretty(ty: &Type) -> String {
    tidy(&ty.to_token_stream().to_string())
}

fn tidy(s: &str) -> String {
    let mut out = s.to_owned();
    for (from, to) in [
        (" < ", "<"),
        ("< ", "<"),
        (" <", "<"),
        (" >", ">"),
        (" ,", ","),
        (" :: ", "::"),
        (":: ", "::"),
        ("& ", "&"),
        ("[ ", "["),
        (" ]", "]"),
        ("( ", "("),
        (" )", ")"),
        (" ;", ";"),
    ] {
        out = out.replace(from, to);
    }
    out
}
