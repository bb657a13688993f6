/**
 * `Schema.is` without the parser's allocations, for hot paths that check one object per record: the schema's type
 * AST compiled once into a plain predicate that runs the schema's own refinement filters (the rules stay the
 * schema's: lengths, patterns, brands' checks). Only the AST kinds listed in `compile` are compiled (arrays as
 * `Schema.Array` makes them, recursion through `Schema.suspend`); for a schema with any other kind, `predicateOf`
 * returns `Schema.is` itself. Same answers as `Schema.is` (property-tested in
 * test/shared/SchemaPredicate.test.ts): `exact` optional properties (a missing key passes, a present one is
 * checked), excess properties ignored, a record being any object but null and arrays, as effect's parser has it.
 */
import { Option, Schema, SchemaAST } from "effect"

type Predicate = (u: unknown) => boolean

const options: SchemaAST.ParseOptions = { exact: true }

/** The predicate of an AST, or undefined when it holds a kind not compiled here. */
const compile = (ast: SchemaAST.AST): Predicate | undefined => {
  switch (ast._tag) {
    case "StringKeyword":
      return (u) => typeof u === "string"
    case "NumberKeyword":
      return (u) => typeof u === "number"
    case "BooleanKeyword":
      return (u) => typeof u === "boolean"
    case "UndefinedKeyword":
      return (u) => u === undefined
    case "Literal": {
      const literal = ast.literal
      return (u) => u === literal
    }
    case "Refinement": {
      const from = compile(ast.from)
      if (from === undefined) return undefined
      const { filter } = ast
      return (u) => from(u) && Option.isNone(filter(u, options, ast))
    }
    case "Union": {
      const members = ast.types.map(compile)
      if (members.some((m) => m === undefined)) return undefined
      const ms = members as Array<Predicate>
      return (u) => ms.some((m) => m(u))
    }
    case "TypeLiteral":
      return compileTypeLiteral(ast)
    case "TupleType": {
      // only `Schema.Array(item)`: no fixed elements, one rest type; every index is checked, holes too (as undefined)
      if (ast.elements.length > 0 || ast.rest.length !== 1) return undefined
      const item = compile(ast.rest[0]!.type)
      if (item === undefined) return undefined
      return (u) => {
        if (!Array.isArray(u)) return false
        for (let i = 0; i < u.length; i++) if (!item(u[i])) return false
        return true
      }
    }
    case "Suspend": {
      // Compiled at its first use: `typeAST` gives a recursive schema a new Suspend (and new nodes around it) at
      // each level, so compiling it at once would not end. A value reaches as many levels as it nests (bounded by
      // the callers' nesting checks), each compiled once; a level this module cannot compile is `Schema.is`'s.
      let p: Predicate | undefined
      return (u) => {
        if (p === undefined) {
          const inner = ast.f()
          p = compile(inner) ?? Schema.is(Schema.make(inner))
        }
        return p(u)
      }
    }
    default:
      return undefined
  }
}

const compileTypeLiteral = (ast: SchemaAST.TypeLiteral): Predicate | undefined => {
  if (ast.indexSignatures.length > 0) return undefined
  // `{}`: effect checks only that the value is not null or undefined.
  if (ast.propertySignatures.length === 0) return (u) => u !== null && u !== undefined
  const props: Array<{ readonly name: PropertyKey; readonly optional: boolean; readonly check: Predicate }> = []
  for (const ps of ast.propertySignatures) {
    const check = compile(ps.type)
    if (check === undefined) return undefined
    props.push({ name: ps.name, optional: ps.isOptional, check })
  }
  return (u) => {
    if (typeof u !== "object" || u === null || Array.isArray(u)) return false
    const o = u as Record<PropertyKey, unknown>
    for (const p of props) {
      if (!Object.hasOwn(o, p.name)) {
        if (p.optional) continue
        return false
      }
      if (!p.check(o[p.name])) return false
    }
    return true
  }
}

/** A predicate with `Schema.is(schema)`'s answers (see the module's doc). Compile once, not per value. */
export const predicateOf = <A, I, R>(schema: Schema.Schema<A, I, R>): ((u: unknown) => u is A) => {
  const compiled = compile(SchemaAST.typeAST(schema.ast))
  return compiled === undefined ? Schema.is(schema) : (compiled as (u: unknown) => u is A)
}
