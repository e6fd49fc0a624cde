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
//! `Y_j`, numbers, and linear terms (`+`, `-`, `*` by a constant); `(and ...)`; and
//! `(or (and ...) ...)` whose disjuncts may mix input and output atoms (ACAS Xu
//! property 6, nn4sys). Errors name the file, line and column.

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

/// Parse a VNN-LIB file.
pub fn parse_file(path: impl AsRef<Path>) -> Result<Property> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error {
        path: Some(path.to_path_buf()),
        line: 0,
        column: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse_str(&text).map_err(|e| Error { path: Some(path.to_path_buf()), ..e })
}

// ------------------------------------------------------------------- s-expressions

#[derive(Debug)]
enum Sexp {
    Atom(String, (usize, usize)),
    List(Vec<Sexp>, (usize, usize)),
}

impl Sexp {
    fn pos(&self) -> (usize, usize) {
        match self {
            Sexp::Atom(_, p) | Sexp::List(_, p) => *p,
        }
    }
}

fn read_all(text: &str) -> Result<Vec<Sexp>> {
    let mut stack: Vec<(Vec<Sexp>, (usize, usize))> = vec![(Vec::new(), (1, 1))];
    let (mut line, mut col) = (1, 0);
    let mut chars = text.chars().peekable();
    let mut atom = String::new();
    let mut atom_pos = (0, 0);
    let flush = |atom: &mut String, pos, stack: &mut Vec<(Vec<Sexp>, (usize, usize))>| {
        if !atom.is_empty() {
            stack.last_mut().expect("root").0.push(Sexp::Atom(std::mem::take(atom), pos));
        }
    };
    while let Some(c) = chars.next() {
        col += 1;
        match c {
            ';' => {
                flush(&mut atom, atom_pos, &mut stack);
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        col = 0;
                        break;
                    }
                }
            }
            '(' => {
                flush(&mut atom, atom_pos, &mut stack);
                stack.push((Vec::new(), (line, col)));
            }
            ')' => {
                flush(&mut atom, atom_pos, &mut stack);
                if stack.len() == 1 {
                    return err((line, col), "unbalanced ')'");
                }
                let (items, pos) = stack.pop().expect("non-root");
                stack.last_mut().expect("root").0.push(Sexp::List(items, pos));
            }
            c if c.is_whitespace() => {
                flush(&mut atom, atom_pos, &mut stack);
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
    flush(&mut atom, atom_pos, &mut stack);
    if stack.len() > 1 {
        let pos = stack.last().expect("open").1;
        return err(pos, "unclosed '('");
    }
    Ok(stack.pop().expect("root").0)
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
/// A disjunction of conjunctions, with its position in the file.
type Disjunction = (Vec<Vec<Atom>>, (usize, usize));

struct Parser {
    n_in: usize,
    n_out: usize,
}

impl Parser {
    fn term(&self, s: &Sexp) -> Result<Linear> {
        match s {
            Sexp::Atom(a, pos) => {
                if let Some(i) = a.strip_prefix("X_") {
                    let i: usize = i.parse().or_else(|_| err(*pos, format!("bad variable '{a}'")))?;
                    if i >= self.n_in {
                        return err(*pos, format!("'{a}' is not declared ({} inputs)", self.n_in));
                    }
                    Ok(Linear { x: vec![(i, 1.0)], ..Default::default() })
                } else if let Some(j) = a.strip_prefix("Y_") {
                    let j: usize = j.parse().or_else(|_| err(*pos, format!("bad variable '{a}'")))?;
                    if j >= self.n_out {
                        return err(*pos, format!("'{a}' is not declared ({} outputs)", self.n_out));
                    }
                    Ok(Linear { y: vec![(j, 1.0)], ..Default::default() })
                } else {
                    let v: f64 = a
                        .parse()
                        .or_else(|_| err(*pos, format!("expected a number or a variable, found '{a}'")))?;
                    if !v.is_finite() {
                        return err(*pos, format!("non-finite number '{a}'"));
                    }
                    Ok(Linear { c: v, ..Default::default() })
                }
            }
            Sexp::List(items, pos) => {
                let (op, args) = head(items, *pos)?;
                let terms: Vec<Linear> = args.iter().map(|a| self.term(a)).collect::<Result<_>>()?;
                match (op, terms.len()) {
                    ("+", n) if n >= 1 => Ok(terms.into_iter().reduce(Linear::add).expect("non-empty")),
                    ("-", 1) => Ok(terms.into_iter().next().expect("one").scale(-1.0)),
                    ("-", n) if n >= 2 => {
                        let mut it = terms.into_iter();
                        let first = it.next().expect("first");
                        Ok(it.fold(first, |acc, t| acc.add(t.scale(-1.0))))
                    }
                    ("*", 2) => {
                        let mut it = terms.into_iter();
                        let (a, b) = (it.next().expect("a"), it.next().expect("b"));
                        if a.is_const() {
                            Ok(b.scale(a.c))
                        } else if b.is_const() {
                            Ok(a.scale(b.c))
                        } else {
                            err(*pos, "product of two variables (not linear)")
                        }
                    }
                    _ => err(*pos, format!("unsupported term '({op} ...)' with {} arguments", args.len())),
                }
            }
        }
    }

    /// A comparison as atoms `lin <= 0`.
    fn comparison(&self, items: &[Sexp], pos: (usize, usize)) -> Result<Vec<Atom>> {
        let (op, args) = head(items, pos)?;
        if args.len() != 2 {
            return err(pos, format!("'{op}' takes two arguments, found {}", args.len()));
        }
        let (a, b) = (self.term(&args[0])?, self.term(&args[1])?);
        let le = |a: Linear, b: Linear| a.add(b.scale(-1.0));
        match op {
            "<=" | "<" => Ok(vec![le(a, b)]),
            ">=" | ">" => Ok(vec![le(b, a)]),
            "=" => Ok(vec![le(a.clone(), b.clone()), le(b, a)]),
            other => err(pos, format!("expected a comparison, found '{other}'")),
        }
    }

    /// A conjunction (`and` of comparisons, or one comparison).
    fn conjunction(&self, s: &Sexp) -> Result<Vec<Atom>> {
        let Sexp::List(items, pos) = s else { return err(s.pos(), "expected '(' ") };
        let (op, args) = head(items, *pos)?;
        if op == "and" {
            let mut out = Vec::new();
            for a in args {
                out.extend(self.conjunction(a)?);
            }
            Ok(out)
        } else {
            self.comparison(items, *pos)
        }
    }
}

fn head(items: &[Sexp], pos: (usize, usize)) -> Result<(&str, &[Sexp])> {
    match items.first() {
        Some(Sexp::Atom(op, _)) => Ok((op.as_str(), &items[1..])),
        _ => err(pos, "expected an operator after '('"),
    }
}

/// Parse VNN-LIB text.
pub fn parse_str(text: &str) -> Result<Property> {
    let forms = read_all(text)?;
    let mut p = Parser { n_in: 0, n_out: 0 };
    let mut declared_x = Vec::new();
    let mut declared_y = Vec::new();
    for f in &forms {
        if let Sexp::List(items, pos) = f
            && let Ok(("declare-const", args)) = head(items, *pos)
        {
            let name = match args.first() {
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
    p.n_in = declared_x.len();
    p.n_out = declared_y.len();
    if p.n_in == 0 || p.n_out == 0 {
        return err((1, 1), "no X_i or no Y_j declared");
    }

    // Top-level atoms, and disjunctions (each a list of conjunctions).
    let mut top: Vec<Atom> = Vec::new();
    let mut disjunctions: Vec<Disjunction> = Vec::new();
    for f in &forms {
        let Sexp::List(items, pos) = f else { return err(f.pos(), "expected '(' at top level") };
        match head(items, *pos)? {
            ("declare-const", _) => {}
            ("assert", [body]) => match body {
                Sexp::List(inner, ipos) if matches!(head(inner, *ipos)?, ("or", _)) => {
                    let (_, args) = head(inner, *ipos)?;
                    let conj = args.iter().map(|a| p.conjunction(a)).collect::<Result<Vec<_>>>()?;
                    disjunctions.push((conj, *ipos));
                }
                other => top.extend(p.conjunction(other)?),
            },
            ("assert", _) => return err(*pos, "assert takes one argument"),
            (other, _) => return err(*pos, format!("unsupported command '{other}'")),
        }
    }

    // Expand the product of disjunctions into disjuncts (usually at most one `or`).
    let mut disjuncts: Vec<Vec<Atom>> = vec![top];
    for (d, pos) in disjunctions {
        if disjuncts.len() * d.len() > 1_000_000 {
            return err(pos, "too many disjuncts");
        }
        disjuncts = disjuncts
            .iter()
            .flat_map(|base| d.iter().map(move |c| [base.clone(), c.clone()].concat()))
            .collect();
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
                    if *k > 0.0 { hi[*i] = hi[*i].min(v) } else { lo[*i] = lo[*i].max(v) }
                }
                ([], false) => {
                    let mut row = vec![0.0; p.n_out];
                    for (j, k) in &a.y {
                        row[*j] += k;
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
}
