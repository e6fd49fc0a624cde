//! VNN-LIB properties: the subset used by VNN-COMP.
//!
//! A VNN-LIB file declares inputs `X_i` and outputs `Y_j` (indices into the row-major
//! flattening of the ONNX input and output) and asserts constraints that describe the
//! **unsafe set**: the property is violated (`sat`) iff some input satisfies every
//! assertion; it holds (`unsat`) iff no input does.
//!
//! Parsed form: a disjunction of [`Region`]s, each an input box and a disjunction of
//! output conjunctions `mat · y <= rhs`. Supported: `declare-const`, top-level atoms
//! `(<= a b)`, `(>= a b)` (`<`, `>` read as non-strict), `=` (two atoms), over `X_i`,
//! `Y_j`, numbers, and linear terms (`+`, `-`, `*` by a constant); any nesting of
//! `(and ...)` and `(or ...)`, normalized to a disjunction of conjunctions (at most
//! [`MAX_DISJUNCTS`]) whose disjuncts may mix input and output atoms (ACAS Xu
//! property 6, nn4sys). The reader and the normalization use explicit stacks (no
//! recursion): any nesting depth is an answer or an error, never a stack overflow.
//! Errors name the file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

/// An input box and the output conjunctions that are unsafe for inputs in it.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    /// Disjunction; empty means every output is unsafe (no output constraint).
    pub outputs: Vec<OutputConjunction>,
}

/// `mat · y <= rhs`, all rows at once.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputConjunction {
    pub mat: Vec<Vec<f64>>,
    pub rhs: Vec<f64>,
}

/// A parsed property.
#[derive(Clone, Debug, PartialEq)]
pub struct Property {
    pub n_inputs: usize,
    pub n_outputs: usize,
    pub regions: Vec<Region>,
}

impl Property {
    /// The smallest box containing every region's input box.
    pub fn input_box(&self) -> (Vec<f64>, Vec<f64>) {
        let mut lo = vec![f64::INFINITY; self.n_inputs];
        let mut hi = vec![f64::NEG_INFINITY; self.n_inputs];
        for r in &self.regions {
            for i in 0..self.n_inputs {
                lo[i] = lo[i].min(r.lower[i]);
                hi[i] = hi[i].max(r.upper[i]);
            }
        }
        (lo, hi)
    }
}

/// A parse error, with the file (when known) and the position.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    pub path: Option<PathBuf>,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}:{}:{}: {}", p.display(), self.line, self.column, self.message),
            None => write!(f, "line {}, column {}: {}", self.line, self.column, self.message),
        }
    }
}

type Result<T> = std::result::Result<T, Error>;

fn err<T>(pos: (usize, usize), message: impl Into<String>) -> Result<T> {
    Err(Error { path: None, line: pos.0, column: pos.1, message: message.into() })
}

/// Largest VNN-LIB file read by [`parse_file`] (1 GiB); [`parse_file_limited`] takes
/// another limit.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Most disjuncts of the and/or normal form (a disjunction of conjunctions) of a
/// property, and most atoms over all of them.
pub const MAX_DISJUNCTS: usize = 1_000_000;
pub const MAX_ATOMS: usize = 2_000_000;

/// Parse a VNN-LIB file (at most [`MAX_FILE_BYTES`]).
pub fn parse_file(path: impl AsRef<Path>) -> Result<Property> {
    parse_file_limited(path, MAX_FILE_BYTES)
}

/// Parse a VNN-LIB file, refusing one longer than `max_bytes` without reading past it
/// (`/dev/zero` is an error, not a hang).
pub fn parse_file_limited(path: impl AsRef<Path>, max_bytes: u64) -> Result<Property> {
    use std::io::Read;
    let path = path.as_ref();
    let fail = |message: String| Error { path: Some(path.to_path_buf()), line: 0, column: 0, message };
    let f = std::fs::File::open(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let mut bytes = Vec::new();
    f.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > max_bytes {
        return Err(fail(format!("the file is longer than {max_bytes} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|e| fail(format!("not UTF-8 text: {e}")))?;
    parse_str(&text).map_err(|e| Error { path: Some(path.to_path_buf()), ..e })
}

// ------------------------------------------------------------------- s-expressions

/// The s-expressions of a file in an arena: a list holds the indices of its items,
/// which are always smaller than its own (a list is stored when it closes). Nothing
/// here or below recurses, so any nesting depth is read and dropped safely.
#[derive(Debug)]
enum Sexp {
    Atom(String, (usize, usize)),
    List(Vec<usize>, (usize, usize)),
}

struct Arena {
    nodes: Vec<Sexp>,
}

impl Arena {
    fn pos(&self, i: usize) -> (usize, usize) {
        match &self.nodes[i] {
            Sexp::Atom(_, p) | Sexp::List(_, p) => *p,
        }
    }
    /// The operator and arguments of a list.
    fn head<'a>(&'a self, items: &'a [usize], pos: (usize, usize)) -> Result<(&'a str, &'a [usize])> {
        match items.first().map(|&i| &self.nodes[i]) {
            Some(Sexp::Atom(op, _)) => Ok((op.as_str(), &items[1..])),
            _ => err(pos, "expected an operator after '('"),
        }
    }
}

/// Read the top-level forms (their indices) into an arena.
fn read_all(text: &str) -> Result<(Arena, Vec<usize>)> {
    let mut nodes: Vec<Sexp> = Vec::new();
    let mut stack: Vec<(Vec<usize>, (usize, usize))> = vec![(Vec::new(), (1, 1))];
    let (mut line, mut col) = (1, 0);
    let mut chars = text.chars().peekable();
    let mut atom = String::new();
    let mut atom_pos = (0, 0);
    let flush =
        |atom: &mut String, pos, stack: &mut Vec<(Vec<usize>, (usize, usize))>, nodes: &mut Vec<Sexp>| {
            if !atom.is_empty() {
                nodes.push(Sexp::Atom(std::mem::take(atom), pos));
                stack.last_mut().expect("root").0.push(nodes.len() - 1);
            }
        };
    while let Some(c) = chars.next() {
        col += 1;
        match c {
            ';' => {
                flush(&mut atom, atom_pos, &mut stack, &mut nodes);
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        col = 0;
                        break;
                    }
                }
            }
            '(' => {
                flush(&mut atom, atom_pos, &mut stack, &mut nodes);
                stack.push((Vec::new(), (line, col)));
            }
            ')' => {
                flush(&mut atom, atom_pos, &mut stack, &mut nodes);
                if stack.len() == 1 {
                    return err((line, col), "unbalanced ')'");
                }
                let (items, pos) = stack.pop().expect("non-root");
                nodes.push(Sexp::List(items, pos));
                stack.last_mut().expect("root").0.push(nodes.len() - 1);
            }
            c if c.is_whitespace() => {
                flush(&mut atom, atom_pos, &mut stack, &mut nodes);
                if c == '\n' {
                    line += 1;
                    col = 0;
                }
            }
            c => {
                if atom.is_empty() {
                    atom_pos = (line, col);
                }
                atom.push(c);
            }
        }
    }
    flush(&mut atom, atom_pos, &mut stack, &mut nodes);
    if stack.len() > 1 {
        let pos = stack.last().expect("open").1;
        return err(pos, "unclosed '('");
    }
    let top = stack.pop().expect("root").0;
    Ok((Arena { nodes }, top))
}

// ------------------------------------------------------------------- semantics

/// `Σ coef·var + constant` over inputs (`x`) and outputs (`y`).
#[derive(Clone, Debug, Default)]
struct Linear {
    x: Vec<(usize, f64)>,
    y: Vec<(usize, f64)>,
    c: f64,
}

impl Linear {
    fn scale(mut self, k: f64) -> Linear {
        self.x.iter_mut().for_each(|t| t.1 *= k);
        self.y.iter_mut().for_each(|t| t.1 *= k);
        self.c *= k;
        self
    }
    fn add(mut self, o: Linear) -> Linear {
        self.x.extend(o.x);
        self.y.extend(o.y);
        self.c += o.c;
        self
    }
    fn is_const(&self) -> bool {
        self.x.is_empty() && self.y.is_empty()
    }
}

/// One atom `lin <= 0`.
type Atom = Linear;
/// A disjunction of conjunctions of atoms.
type Dnf = Vec<Vec<Atom>>;

struct Parser<'a> {
    sx: &'a Arena,
    n_in: usize,
    n_out: usize,
}

impl Parser<'_> {
    fn variable(&self, a: &str, pos: (usize, usize)) -> Result<Linear> {
        if let Some(i) = a.strip_prefix("X_") {
            let i: usize = i.parse().or_else(|_| err(pos, format!("bad variable '{a}'")))?;
            if i >= self.n_in {
                return err(pos, format!("'{a}' is not declared ({} inputs)", self.n_in));
            }
            Ok(Linear { x: vec![(i, 1.0)], ..Default::default() })
        } else if let Some(j) = a.strip_prefix("Y_") {
            let j: usize = j.parse().or_else(|_| err(pos, format!("bad variable '{a}'")))?;
            if j >= self.n_out {
                return err(pos, format!("'{a}' is not declared ({} outputs)", self.n_out));
            }
            Ok(Linear { y: vec![(j, 1.0)], ..Default::default() })
        } else {
            let v: f64 =
                a.parse().or_else(|_| err(pos, format!("expected a number or a variable, found '{a}'")))?;
            if !v.is_finite() {
                return err(pos, format!("non-finite number '{a}'"));
            }
            Ok(Linear { c: v, ..Default::default() })
        }
    }

    /// A linear term, evaluated bottom-up with an explicit stack.
    fn term(&self, root: usize) -> Result<Linear> {
        let mut work = vec![(root, false)];
        let mut vals: Vec<Linear> = Vec::new();
        while let Some((i, done)) = work.pop() {
            match &self.sx.nodes[i] {
                Sexp::Atom(a, pos) => vals.push(self.variable(a, *pos)?),
                Sexp::List(items, pos) => {
                    let (op, args) = self.sx.head(items, *pos)?;
                    let ok = match op {
                        "+" | "-" => !args.is_empty(),
                        "*" => args.len() == 2,
                        _ => false,
                    };
                    if !ok {
                        let hint = match op {
                            "and" | "or" | "not" | "<=" | ">=" | "<" | ">" | "=" => {
                                " (a constraint where a linear term is expected)"
                            }
                            _ => "",
                        };
                        return err(
                            *pos,
                            format!("unsupported term '({op} ...)' with {} arguments{hint}", args.len()),
                        );
                    }
                    if !done {
                        work.push((i, true));
                        work.extend(args.iter().rev().map(|&a| (a, false)));
                        continue;
                    }
                    let terms = vals.split_off(vals.len() - args.len());
                    let mut it = terms.into_iter();
                    let first = it.next().expect("non-empty");
                    vals.push(match (op, args.len()) {
                        ("+", _) => it.fold(first, Linear::add),
                        ("-", 1) => first.scale(-1.0),
                        ("-", _) => it.fold(first, |acc, t| acc.add(t.scale(-1.0))),
                        _ => {
                            let b = it.next().expect("two");
                            if first.is_const() {
                                b.scale(first.c)
                            } else if b.is_const() {
                                first.scale(b.c)
                            } else {
                                return err(*pos, "product of two variables (not linear)");
                            }
                        }
                    });
                }
            }
        }
        Ok(vals.pop().expect("one value"))
    }

    /// A comparison as atoms `lin <= 0`.
    fn comparison(&self, op: &str, args: &[usize], pos: (usize, usize)) -> Result<Vec<Atom>> {
        if args.len() != 2 {
            return err(pos, format!("'{op}' takes two arguments, found {}", args.len()));
        }
        let (a, b) = (self.term(args[0])?, self.term(args[1])?);
        let le = |a: Linear, b: Linear| a.add(b.scale(-1.0));
        Ok(match op {
            "<=" | "<" => vec![le(a, b)],
            ">=" | ">" => vec![le(b, a)],
            _ => vec![le(a.clone(), b.clone()), le(b, a)],
        })
    }

    /// A constraint (any nesting of `and`/`or` over comparisons) in disjunctive
    /// normal form, built bottom-up with an explicit stack.
    fn formula(&self, root: usize) -> Result<Dnf> {
        let mut work = vec![(root, false)];
        let mut vals: Vec<Dnf> = Vec::new();
        while let Some((i, done)) = work.pop() {
            let (items, pos) = match &self.sx.nodes[i] {
                Sexp::List(items, pos) => (items, *pos),
                Sexp::Atom(a, pos) => {
                    return err(*pos, format!("expected a constraint '(...)', found '{a}'"));
                }
            };
            let (op, args) = self.sx.head(items, pos)?;
            match op {
                "and" | "or" if !done => {
                    work.push((i, true));
                    work.extend(args.iter().rev().map(|&a| (a, false)));
                }
                "and" => {
                    let parts = vals.split_off(vals.len() - args.len());
                    let mut acc: Dnf = vec![Vec::new()];
                    for d in parts {
                        acc = product(acc, d, pos)?;
                    }
                    vals.push(acc);
                }
                "or" => {
                    let parts = vals.split_off(vals.len() - args.len());
                    let total: usize = parts.iter().map(Vec::len).sum();
                    if total > MAX_DISJUNCTS {
                        return err(pos, format!("too many disjuncts (more than {MAX_DISJUNCTS})"));
                    }
                    vals.push(parts.into_iter().flatten().collect());
                }
                "<=" | ">=" | "<" | ">" | "=" => vals.push(vec![self.comparison(op, args, pos)?]),
                "not" => {
                    return err(
                        pos,
                        "'not' is not supported: state the negated comparison instead \
                         (e.g. (<= a b) for (not (> a b)))",
                    );
                }
                other => {
                    return err(
                        pos,
                        format!(
                            "expected 'and', 'or' or a comparison (<=, >=, <, >, =), found '({other} ...)'"
                        ),
                    );
                }
            }
        }
        Ok(vals.pop().expect("one value"))
    }
}

/// The conjunction of two normal forms, within the size limits.
fn product(a: Dnf, b: Dnf, pos: (usize, usize)) -> Result<Dnf> {
    if a.len().saturating_mul(b.len()) > MAX_DISJUNCTS {
        return err(pos, format!("too many disjuncts (more than {MAX_DISJUNCTS})"));
    }
    let atoms = |d: &Dnf| d.iter().map(Vec::len).sum::<usize>();
    let total = atoms(&a).saturating_mul(b.len()).saturating_add(atoms(&b).saturating_mul(a.len()));
    if total > MAX_ATOMS {
        return err(pos, format!("the and/or normal form has too many atoms (more than {MAX_ATOMS})"));
    }
    if b.len() == 1 {
        let tail = b.into_iter().next().expect("one");
        return Ok(a
            .into_iter()
            .map(|mut c| {
                c.extend(tail.iter().cloned());
                c
            })
            .collect());
    }
    Ok(a.iter().flat_map(|x| b.iter().map(move |y| [x.clone(), y.clone()].concat())).collect())
}

/// Parse VNN-LIB text.
pub fn parse_str(text: &str) -> Result<Property> {
    let (sx, forms) = read_all(text)?;
    let mut declared_x = Vec::new();
    let mut declared_y = Vec::new();
    for &f in &forms {
        if let Sexp::List(items, pos) = &sx.nodes[f]
            && let Ok(("declare-const", args)) = sx.head(items, *pos)
        {
            let name = match args.first().map(|&a| &sx.nodes[a]) {
                Some(Sexp::Atom(n, _)) => n,
                _ => return err(*pos, "declare-const without a name"),
            };
            let idx =
                |s: &str| s.parse::<usize>().or_else(|_| err(*pos, format!("bad variable name '{name}'")));
            if let Some(i) = name.strip_prefix("X_") {
                declared_x.push(idx(i)?);
            } else if let Some(j) = name.strip_prefix("Y_") {
                declared_y.push(idx(j)?);
            } else {
                return err(*pos, format!("unknown variable '{name}' (expected X_i or Y_j)"));
            }
        }
    }
    for (v, name) in [(&mut declared_x, "X"), (&mut declared_y, "Y")] {
        v.sort_unstable();
        if v.iter().enumerate().any(|(k, &i)| k != i) {
            return err(
                (1, 1),
                format!("{name} variables are not declared as {name}_0 .. {name}_{}", v.len()),
            );
        }
    }
    let p = Parser { sx: &sx, n_in: declared_x.len(), n_out: declared_y.len() };
    if p.n_in == 0 || p.n_out == 0 {
        return err((1, 1), "no X_i or no Y_j declared");
    }

    // Every assertion in normal form; the conjunction of all of them, the plain
    // conjunctions first (in file order), then those with several disjuncts.
    let mut plain: Vec<Atom> = Vec::new();
    let mut disjunctions: Vec<(Dnf, (usize, usize))> = Vec::new();
    for &f in &forms {
        let Sexp::List(items, pos) = &sx.nodes[f] else { return err(sx.pos(f), "expected '(' at top level") };
        match sx.head(items, *pos)? {
            ("declare-const", _) => {}
            ("assert", [body]) => {
                let mut d = p.formula(*body)?;
                if d.len() == 1 {
                    plain.extend(d.pop().expect("one"));
                } else {
                    disjunctions.push((d, sx.pos(*body)));
                }
            }
            ("assert", _) => return err(*pos, "assert takes one argument"),
            (other, _) => return err(*pos, format!("unsupported command '{other}'")),
        }
    }
    let mut disjuncts: Dnf = vec![plain];
    for (d, pos) in disjunctions {
        disjuncts = product(disjuncts, d, pos)?;
    }

    let mut regions: Vec<Region> = Vec::new();
    for atoms in disjuncts {
        let mut lo = vec![f64::NEG_INFINITY; p.n_in];
        let mut hi = vec![f64::INFINITY; p.n_in];
        let mut conj = OutputConjunction { mat: Vec::new(), rhs: Vec::new() };
        let mut empty = false;
        for a in atoms {
            match (a.x.as_slice(), a.y.is_empty()) {
                ([(i, k)], true) if *k != 0.0 => {
                    // k·x_i + c <= 0
                    let v = -a.c / k;
                    if !v.is_finite() {
                        return err((1, 1), format!("the bound of X_{i} is not finite ({} / {k})", -a.c));
                    }
                    if *k > 0.0 { hi[*i] = hi[*i].min(v) } else { lo[*i] = lo[*i].max(v) }
                }
                ([], false) => {
                    let mut row = vec![0.0; p.n_out];
                    for (j, k) in &a.y {
                        row[*j] += k;
                    }
                    if row.iter().any(|v| !v.is_finite()) || !a.c.is_finite() {
                        return err((1, 1), "an output constraint has a coefficient that is not finite");
                    }
                    conj.mat.push(row);
                    conj.rhs.push(-a.c);
                }
                ([], true) => {
                    // A constant atom: false makes this disjunct empty.
                    empty |= a.c > 0.0;
                }
                _ => {
                    return err(
                        (1, 1),
                        "constraints mixing inputs with outputs or several inputs are not supported",
                    );
                }
            }
        }
        if empty {
            continue;
        }
        if let Some(i) = (0..p.n_in).find(|&i| !lo[i].is_finite() || !hi[i].is_finite()) {
            return err((1, 1), format!("input X_{i} is not bounded on both sides"));
        }
        if (0..p.n_in).any(|i| lo[i] > hi[i]) {
            continue; // empty box: no counterexample can come from it
        }
        match regions.iter_mut().find(|r| r.lower == lo && r.upper == hi) {
            Some(r) => r.outputs.push(conj),
            None => regions.push(Region { lower: lo, upper: hi, outputs: vec![conj] }),
        }
    }
    Ok(Property { n_inputs: p.n_in, n_outputs: p.n_out, regions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_and_output_disjunction() {
        let text = "; comment\n(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n\
                    (declare-const Y_1 Real)\n(assert (<= X_0 0.5))(assert (>= X_0 -0.5))\n(assert (<= X_1 1e-1))\n\
                    (assert (>= X_1 -1))\n(assert (or (and (>= Y_1 Y_0)) (and (<= Y_0 3) (>= Y_0 (- 2)))))";
        let p = parse_str(text).unwrap();
        assert_eq!((p.n_inputs, p.n_outputs), (2, 2));
        assert_eq!(p.regions.len(), 1);
        let r = &p.regions[0];
        assert_eq!((r.lower.clone(), r.upper.clone()), (vec![-0.5, -1.0], vec![0.5, 0.1]));
        assert_eq!(r.outputs[0], OutputConjunction { mat: vec![vec![1.0, -1.0]], rhs: vec![0.0] });
        assert_eq!(
            r.outputs[1],
            OutputConjunction { mat: vec![vec![1.0, 0.0], vec![-1.0, 0.0]], rhs: vec![3.0, 2.0] }
        );
    }

    #[test]
    fn input_disjunction_gives_regions() {
        let text = "(declare-const X_0 Real)(declare-const Y_0 Real)\
                    (assert (or (and (<= X_0 1) (>= X_0 0)) (and (<= X_0 3) (>= X_0 2))))(assert (<= Y_0 0))";
        let p = parse_str(text).unwrap();
        assert_eq!(p.regions.len(), 2);
        assert_eq!(p.input_box(), (vec![0.0], vec![3.0]));
    }

    #[test]
    fn errors_name_the_line() {
        let e =
            parse_str("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_7 1))").unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        let e = parse_str("(declare-const X_0 Real)\n(assert (<= X_0 1)").unwrap_err();
        assert!(e.to_string().contains("unclosed"), "{e}");
        let e = parse_str("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))").unwrap_err();
        assert!(e.to_string().contains("not bounded"), "{e}");
        assert!(parse_str("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 nan))").is_err());
    }

    #[test]
    fn any_nesting_normalizes_and_malformed_terms_say_why() {
        let decl = "(declare-const X_0 Real)(declare-const Y_0 Real)(declare-const Y_1 Real)\
                    (assert (<= X_0 1))(assert (>= X_0 0))";
        // (and (or a b) c) = (or (and a c) (and b c)).
        let p = parse_str(&format!("{decl}(assert (and (or (<= Y_0 0) (<= Y_1 0)) (>= Y_0 -5)))")).unwrap();
        assert_eq!(p.regions.len(), 1);
        assert_eq!(p.regions[0].outputs.len(), 2);
        assert_eq!(p.regions[0].outputs[1].mat, vec![vec![0.0, 1.0], vec![-1.0, 0.0]]);
        // 100,000 levels of alternating and/or: no recursion, one conjunction.
        let open: String = (0..100_000).map(|k| if k % 2 == 0 { "(and " } else { "(or " }).collect();
        let deep = format!("{open}(<= Y_0 0){}", ")".repeat(100_000));
        let p = parse_str(&format!("{decl}(assert {deep})")).unwrap();
        assert_eq!(p.regions[0].outputs.len(), 1);
        // Terms nested 100,000 deep.
        let term = format!("{}Y_0{}", "(- ".repeat(100_000), ")".repeat(100_000));
        let p = parse_str(&format!("{decl}(assert (<= {term} 1))")).unwrap();
        assert_eq!(p.regions[0].outputs[0].mat, vec![vec![1.0, 0.0]]);
        for (body, expected) in [
            ("(assert (not (<= Y_0 0)))", "'not' is not supported"),
            ("(assert (<= Y_0))", "'<=' takes two arguments, found 1"),
            ("(assert (xor (<= Y_0 0)))", "expected 'and', 'or' or a comparison"),
            ("(assert (<= (and (<= Y_0 0)) 1))", "a constraint where a linear term is expected"),
            ("(assert Y_0)", "expected a constraint"),
            ("(assert (<= (* Y_0 Y_1) 1))", "product of two variables"),
            (&format!("{}{}", "(".repeat(200_000), ")".repeat(200_000)), "expected an operator"),
        ] {
            let e = parse_str(&format!("{decl}{body}")).unwrap_err().to_string();
            assert!(e.contains(expected), "{body:.60}: {e}");
        }
        // 2^21 disjuncts of 21 atoms: over the limits, an error rather than gigabytes.
        let or = "(or (<= Y_0 0) (<= Y_1 0))".repeat(21);
        let e = parse_str(&format!("{decl}(assert (and {or}))")).unwrap_err().to_string();
        assert!(e.contains("too many atoms"), "{e}");
        let or = "(or (<= Y_0 0) (<= Y_1 0))";
        let e = parse_str(&format!("{decl}(assert (or {}))", or.repeat(600_000))).unwrap_err().to_string();
        assert!(e.contains("too many disjuncts"), "{e}");
    }
}
