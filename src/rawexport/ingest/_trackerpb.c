/* rawexport.ingest._trackerpb: GrowingIO's CDP protobuf bodies (event_v3.proto EventV3List,
 * item.proto ItemDtoList, user_mapping.proto UserMappingDtoList) to lists of dicts keyed by
 * the JSON (lowerCamelCase) names. See trackerpb.py for the contract; the field tables
 * below are that module's EVENT_FIELDS, RESOURCE_FIELDS, ITEM_FIELDS, USER_MAPPING_FIELDS,
 * INT32_FIELDS and EVENT_TYPES (tests/ingest/test_trackerpb.py checks they agree).
 *
 * One pass over the bytes, field by field, in order: the list, each of its messages as it
 * comes (so the first error in the bytes is the one reported, and decoding stops as soon as
 * the (limit + 1)-th message appears, before building it), each message's map entries and
 * its resourceItem. Every message walked is checked to its end, skipped fields included
 * (their keys, varints and lengths; a skipped field's payload is not looked into).
 *
 * Varints are read as Python's reference reads them: up to ten bytes, the tenth adding its
 * seven bits at bit 63, so a value may have 70 bits. Such a value is kept as its low 64 bits
 * plus the bits above (`hi`); int64 fields then give value - 2**64 when value >= 2**63.
 *
 * Nesting is fixed: list -> message -> map entry, or -> resourceItem -> map entry (the
 * resourceItem's table has no nested message). Memory is the output: the input is read in
 * place, and every value is counted before it is built (a dict, a field value, a map
 * entry's key and value), against the list's limit and the message's. Keys are interned
 * once at module init. The GIL is held (Python objects are built).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* A field's kind; 0 is a field number the message does not have. */
enum { K_NONE = 0, K_STR, K_INT, K_INT32, K_ENUM, K_MAP, K_DOUBLE, K_ITEM };

typedef struct {
    const char *name;
    unsigned char kind;
} Def;

#define EVENT_MAX 57
static const Def event_defs[EVENT_MAX + 1] = {
    [1] = {"deviceId", K_STR},
    [2] = {"userId", K_STR},
    [3] = {"gioId", K_STR},
    [4] = {"sessionId", K_STR},
    [5] = {"dataSourceId", K_STR},
    [6] = {"eventType", K_ENUM},
    [7] = {"platform", K_STR},
    [8] = {"timestamp", K_INT},
    [9] = {"domain", K_STR},
    [10] = {"path", K_STR},
    [11] = {"query", K_STR},
    [12] = {"title", K_STR},
    [13] = {"referralPage", K_STR},
    [14] = {"globalSequenceId", K_INT},
    [15] = {"eventSequenceId", K_INT32},
    [16] = {"screenHeight", K_INT32},
    [17] = {"screenWidth", K_INT32},
    [18] = {"language", K_STR},
    [19] = {"sdkVersion", K_STR},
    [20] = {"appVersion", K_STR},
    [21] = {"extraSdk", K_MAP},
    [22] = {"eventName", K_STR},
    [23] = {"pageShowTimestamp", K_INT},
    [24] = {"attributes", K_MAP},
    [25] = {"resourceItem", K_ITEM},
    [26] = {"protocolType", K_STR},
    [27] = {"textValue", K_STR},
    [28] = {"xpath", K_STR},
    [29] = {"index", K_INT32},
    [30] = {"hyperlink", K_STR},
    [31] = {"urlScheme", K_STR},
    [32] = {"appState", K_STR},
    [33] = {"networkState", K_STR},
    [34] = {"appChannel", K_STR},
    [35] = {"pageName", K_STR},
    [36] = {"platformVersion", K_STR},
    [37] = {"deviceBrand", K_STR},
    [38] = {"deviceModel", K_STR},
    [39] = {"deviceType", K_STR},
    [40] = {"operatingSystem", K_STR},
    [42] = {"appName", K_STR},
    [44] = {"latitude", K_DOUBLE},
    [45] = {"longitude", K_DOUBLE},
    [46] = {"imei", K_STR},
    [47] = {"androidId", K_STR},
    [48] = {"oaid", K_STR},
    [49] = {"googleAdvertisingId", K_STR},
    [50] = {"idfa", K_STR},
    [51] = {"idfv", K_STR},
    [52] = {"orientation", K_STR},
    [53] = {"projectKey", K_STR},
    [54] = {"sendTime", K_INT},
    [55] = {"userKey", K_STR},
    [56] = {"xcontent", K_STR},
    [57] = {"timezoneOffset", K_STR},
};

/* ResourceItem: no K_ITEM here, which bounds the nesting. */
#define RESOURCE_MAX 3
static const Def resource_defs[RESOURCE_MAX + 1] = {
    [1] = {"id", K_STR},
    [2] = {"key", K_STR},
    [3] = {"attributes", K_MAP},
};

#define ITEM_MAX 5
static const Def item_defs[ITEM_MAX + 1] = {
    [1] = {"id", K_STR},
    [2] = {"key", K_STR},
    [3] = {"attributes", K_MAP},
    [4] = {"dataSourceId", K_STR},
    [5] = {"projectKey", K_STR},
};

#define MAPPING_MAX 4
static const Def mapping_defs[MAPPING_MAX + 1] = {
    [1] = {"projectKey", K_STR},
    [2] = {"sendTime", K_INT},
    [3] = {"identifies", K_MAP},
    [4] = {"dataSourceId", K_STR},
};

typedef struct {
    const Def *defs;
    uint64_t size; /* field numbers below it may be known */
    PyObject **keys;
} Table;

static PyObject *event_keys[EVENT_MAX + 1];
static PyObject *resource_keys[RESOURCE_MAX + 1];
static PyObject *item_keys[ITEM_MAX + 1];
static PyObject *mapping_keys[MAPPING_MAX + 1];

static const Table event_table = {event_defs, EVENT_MAX + 1, event_keys};
static const Table resource_table = {resource_defs, RESOURCE_MAX + 1, resource_keys};
static const Table item_table = {item_defs, ITEM_MAX + 1, item_keys};
static const Table mapping_table = {mapping_defs, MAPPING_MAX + 1, mapping_keys};

#define N_TYPES 12
static const char *const type_names[N_TYPES] = {
    "VISIT",      "CUSTOM",     "VISITOR_ATTRIBUTES", "LOGIN_USER_ATTRIBUTES",
    "CONVERSION_VARIABLES", "APP_CLOSED", "PAGE", "PAGE_ATTRIBUTES",
    "VIEW_CLICK", "VIEW_CHANGE", "FORM_SUBMIT",        "ACTIVATE",
};
static PyObject *type_strs[N_TYPES];
static PyObject *empty_str;      /* "" */
static PyObject *event_type_key; /* "eventType" */
static PyObject *sixty_four;     /* 64 */

/* ---- the wire ----------------------------------------------------------------------- */

typedef struct {
    PyObject *bad;      /* BadProtobuf */
    PyObject *too_many; /* TooManyEvents */
    /* values built (dicts, field values, map keys and values): the list's and the current
     * message's, each against its limit, and the index of the current message */
    Py_ssize_t values, max_values, message_values, max_message_values, index;
} Ctx;

typedef struct {
    uint64_t number; /* UINT64_MAX for a number beyond 64 bits (unknown everywhere) */
    unsigned wire;
    uint64_t lo; /* wire 0: the value's low 64 bits */
    unsigned hi; /* wire 0: its bits 64..69 */
    const unsigned char *ptr; /* wire 1, 2, 5: the payload */
    size_t len;
} Field;

static int
fail(const Ctx *c, const char *msg)
{
    PyErr_SetString(c->bad, msg);
    return -1;
}

/* A varint of at most ten bytes at *pp; -1 if it does not end before `end` or by then. */
static inline int
read_varint(const unsigned char **pp, const unsigned char *end, uint64_t *lo, unsigned *hi)
{
    const unsigned char *p = *pp;
    if (p < end && *p < 0x80) { /* most keys, lengths and small values */
        *lo = *p;
        *hi = 0;
        *pp = p + 1;
        return 0;
    }
    uint64_t v = 0;
    for (unsigned shift = 0; shift <= 63; shift += 7) {
        if (p >= end)
            return -1;
        unsigned b = *p++;
        v |= (uint64_t)(b & 0x7Fu) << shift;
        if (!(b & 0x80u)) {
            *lo = v;
            *hi = shift == 63 ? (b & 0x7Fu) >> 1 : 0;
            *pp = p;
            return 0;
        }
    }
    return -1;
}

/* The field at *pp (which is before end), checked; *pp moves past it. */
static inline int
next_field(const Ctx *c, const unsigned char **pp, const unsigned char *end, Field *f)
{
    uint64_t key;
    unsigned hi;
    if (read_varint(pp, end, &key, &hi) < 0)
        return fail(c, "truncated varint");
    f->wire = (unsigned)(key & 7);
    f->number = hi ? UINT64_MAX : key >> 3;
    if (f->number == 0)
        return fail(c, "field number 0");
    switch (f->wire) {
    case 0:
        if (read_varint(pp, end, &f->lo, &f->hi) < 0)
            return fail(c, "truncated varint");
        return 0;
    case 2: {
        uint64_t size;
        unsigned size_hi;
        if (read_varint(pp, end, &size, &size_hi) < 0)
            return fail(c, "truncated varint");
        if (size_hi || size > (uint64_t)(end - *pp))
            return fail(c, "truncated field");
        f->ptr = *pp;
        f->len = (size_t)size;
        *pp += size;
        return 0;
    }
    case 1:
    case 5: {
        size_t width = f->wire == 1 ? 8 : 4;
        if ((size_t)(end - *pp) < width)
            return fail(c, "truncated field");
        f->ptr = *pp;
        f->len = width;
        *pp += width;
        return 0;
    }
    default: /* 3 and 4 (groups), 6, 7 */
        PyErr_Format(c->bad, "unsupported wire type %u", f->wire);
        return -1;
    }
}

/* ---- values ------------------------------------------------------------------------- */

/* n more values are about to be built: too_many past the list's or the message's limit. */
static inline int
count(Ctx *c, Py_ssize_t n)
{
    c->values += n;
    c->message_values += n;
    if (c->values > c->max_values) {
        PyErr_Format(c->too_many, "more than %zd values", c->max_values);
        return -1;
    }
    if (c->message_values > c->max_message_values) {
        PyErr_Format(c->too_many, "event %zd holds more than %zd values", c->index,
                     c->max_message_values);
        return -1;
    }
    return 0;
}

static PyObject *
text(const Ctx *c, const unsigned char *p, size_t n)
{
    PyObject *s = PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)n, NULL);
    if (s == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        fail(c, "string field is not UTF-8");
    }
    return s;
}

/* An int64 field: the varint's value v, less 2**64 when v >= 2**63 (Python's rule, which
 * leaves v - 2**64 >= 0 for the 70-bit values a tenth byte above 1 gives). */
static PyObject *
int64_value(uint64_t lo, unsigned hi)
{
    if (hi == 0)
        return PyLong_FromLongLong((long long)(int64_t)lo);
    PyObject *low = PyLong_FromUnsignedLongLong(lo);
    if (low == NULL || hi == 1)
        return low;
    PyObject *high = PyLong_FromUnsignedLong(hi - 1);
    PyObject *shifted = high ? PyNumber_Lshift(high, sixty_four) : NULL;
    PyObject *v = shifted ? PyNumber_Add(shifted, low) : NULL;
    Py_XDECREF(high);
    Py_XDECREF(shifted);
    Py_DECREF(low);
    return v;
}

static PyObject *
enum_value(uint64_t lo, unsigned hi)
{
    if (hi <= 1 && lo < N_TYPES) /* hi 1: v - 2**64 is lo */
        return Py_NewRef(type_strs[lo]);
    PyObject *n = int64_value(lo, hi);
    if (n == NULL)
        return NULL;
    PyObject *s = PyObject_Str(n);
    Py_DECREF(n);
    return s;
}

static PyObject *
double_value(const unsigned char *p)
{
    unsigned char b[8];
#if PY_LITTLE_ENDIAN
    memcpy(b, p, 8);
#else
    for (int i = 0; i < 8; i++)
        b[i] = p[7 - i];
#endif
    double d;
    memcpy(&d, b, sizeof d);
    return PyFloat_FromDouble(d);
}

/* A map entry {1: key, 2: value} added to the dict out[name]; the last key or value in the
 * entry wins, a missing one is "". */
static int
map_entry(Ctx *c, PyObject *out, PyObject *name, const unsigned char *p, size_t n)
{
    const unsigned char *end = p + n;
    if (count(c, 2) < 0)
        return -1;
    PyObject *k = NULL, *v = NULL;
    Field f = {0}; /* zeroed only to quiet a -Wmaybe-uninitialized false alarm */
    while (p < end) {
        if (next_field(c, &p, end, &f) < 0)
            goto error;
        if (f.wire != 2 || (f.number != 1 && f.number != 2))
            continue;
        PyObject *s = text(c, f.ptr, f.len);
        if (s == NULL)
            goto error;
        if (f.number == 1)
            Py_XSETREF(k, s);
        else
            Py_XSETREF(v, s);
    }
    if (k == NULL)
        k = Py_NewRef(empty_str);
    if (v == NULL)
        v = Py_NewRef(empty_str);
    PyObject *m = PyDict_GetItemWithError(out, name); /* borrowed; out keeps it */
    if (m == NULL) {
        if (PyErr_Occurred())
            goto error;
        m = PyDict_New();
        if (m == NULL)
            goto error;
        int rc = PyDict_SetItem(out, name, m);
        Py_DECREF(m);
        if (rc < 0)
            goto error;
    }
    int rc = PyDict_SetItem(m, k, v);
    Py_DECREF(k);
    Py_DECREF(v);
    return rc;
error:
    Py_XDECREF(k);
    Py_XDECREF(v);
    return -1;
}

/* One message as a dict of its table's JSON names. Fields the table does not have, and
 * fields of another wire type than their kind's, are skipped. */
static PyObject *
message(Ctx *c, const Table *t, const unsigned char *p, size_t n)
{
    const unsigned char *end = p + n;
    if (count(c, 1) < 0)
        return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    Field f = {0}; /* zeroed only to quiet a -Wmaybe-uninitialized false alarm */
    while (p < end) {
        if (next_field(c, &p, end, &f) < 0)
            goto error;
        if (f.number >= t->size)
            continue;
        PyObject *key = t->keys[f.number], *v;
        unsigned char kind = t->defs[f.number].kind;
        switch (kind) {
        case K_STR:
            if (f.wire != 2)
                continue;
            v = text(c, f.ptr, f.len);
            break;
        case K_INT:
            if (f.wire != 0)
                continue;
            v = int64_value(f.lo, f.hi);
            break;
        case K_INT32:
            if (f.wire != 0)
                continue;
            v = PyLong_FromLong((long)(int32_t)(uint32_t)f.lo);
            break;
        case K_ENUM:
            if (f.wire != 0)
                continue;
            v = enum_value(f.lo, f.hi);
            break;
        case K_MAP:
            if (f.wire != 2)
                continue;
            if (map_entry(c, out, key, f.ptr, f.len) < 0)
                goto error;
            continue;
        case K_DOUBLE:
            if (f.wire != 1)
                continue;
            v = double_value(f.ptr);
            break;
        case K_ITEM:
            if (f.wire != 2)
                continue;
            v = message(c, &resource_table, f.ptr, f.len); /* one level: no K_ITEM there */
            break;
        default:
            continue;
        }
        if (v == NULL)
            goto error;
        /* a resourceItem counted itself */
        int rc = kind == K_ITEM ? 0 : count(c, 1);
        if (rc == 0)
            rc = PyDict_SetItem(out, key, v);
        Py_DECREF(v);
        if (rc < 0)
            goto error;
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* ---- Python entry points ------------------------------------------------------------ */

/* A limit given as an int (clipped to PY_SSIZE_T_MIN / MAX, which compares as the int
 * itself would) or None (no limit). */
static int
limit_arg(PyObject *o, Py_ssize_t *out)
{
    if (o == Py_None) {
        *out = PY_SSIZE_T_MAX;
        return 0;
    }
    *out = PyNumber_AsSsize_t(o, NULL);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* The repeated message field `list_field` of the list message in data: a list of dicts.
 * Other fields are skipped; the list field with another wire type than 2 is an error. */
static PyObject *
decode_list(PyObject *args, const char *fmt, const Table *t, uint64_t list_field,
            const char *what, int events)
{
    Py_buffer view;
    PyObject *limit_obj, *values_obj = Py_None, *message_values_obj = Py_None;
    Ctx c = {0};
    if (!PyArg_ParseTuple(args, fmt, &view, &limit_obj, &c.bad, &c.too_many, &values_obj,
                          &message_values_obj))
        return NULL;
    PyObject *out = NULL;
    if (!PyExceptionClass_Check(c.bad) || !PyExceptionClass_Check(c.too_many)) {
        PyErr_SetString(PyExc_TypeError, "bad and too_many must be exception classes");
        goto done;
    }
    Py_ssize_t limit;
    if (limit_arg(limit_obj, &limit) < 0 || limit_arg(values_obj, &c.max_values) < 0 ||
        limit_arg(message_values_obj, &c.max_message_values) < 0)
        goto done;
    out = PyList_New(0);
    if (out == NULL)
        goto done;
    const unsigned char *p = view.buf, *end = p + view.len;
    Field f = {0}; /* zeroed only to quiet a -Wmaybe-uninitialized false alarm */
    while (p < end) {
        if (next_field(&c, &p, end, &f) < 0)
            goto error;
        if (f.number != list_field)
            continue;
        if (f.wire != 2) {
            PyErr_Format(c.bad, "expected %s", what);
            goto error;
        }
        if (limit_obj != Py_None && PyList_GET_SIZE(out) >= limit) {
            PyErr_Format(c.too_many, "more than %S events", limit_obj);
            goto error;
        }
        c.index = PyList_GET_SIZE(out);
        c.message_values = 0;
        PyObject *m = message(&c, t, f.ptr, f.len);
        if (m == NULL)
            goto error;
        /* proto3 leaves the 0 value out */
        if (events && PyDict_SetDefault(m, event_type_key, type_strs[0]) == NULL) {
            Py_DECREF(m);
            goto error;
        }
        int rc = PyList_Append(out, m);
        Py_DECREF(m);
        if (rc < 0)
            goto error;
    }
    goto done;
error:
    Py_CLEAR(out);
done:
    PyBuffer_Release(&view);
    return out;
}

static PyObject *
decode_events(PyObject *self, PyObject *args)
{
    return decode_list(args, "y*OOO|OO:decode_events", &event_table, 1, "an EventV3Dto", 1);
}

static PyObject *
decode_items(PyObject *self, PyObject *args)
{
    return decode_list(args, "y*OOO|OO:decode_items", &item_table, 2, "an ItemDto", 0);
}

static PyObject *
decode_user_mappings(PyObject *self, PyObject *args)
{
    return decode_list(args, "y*OOO|OO:decode_user_mappings", &mapping_table, 1,
                       "a UserMappingDto", 0);
}

#define DOC_TAIL                                                                            \
    "Raises `bad` (a ValueError subclass) for bytes that are not such a message, and\n"    \
    "`too_many` when the list holds more than `limit` entries, or more than `values`\n"    \
    "values in all (dicts, field values, map keys and values), or one entry more than\n"  \
    "`message_values` (None: no limit), as soon as the first one too many appears."

static PyMethodDef methods[] = {
    {"decode_events", decode_events, METH_VARARGS,
     "decode_events(data, limit, bad, too_many, values=None, message_values=None, /)\n"
     "    -> list[dict]\n\n"
     "The EventV3Dto values (field 1) of an EventV3List, eventType defaulting to VISIT.\n" DOC_TAIL},
    {"decode_items", decode_items, METH_VARARGS,
     "decode_items(data, limit, bad, too_many, values=None, message_values=None, /)\n"
     "    -> list[dict]\n\n"
     "The ItemDto values (field 2) of an ItemDtoList.\n" DOC_TAIL},
    {"decode_user_mappings", decode_user_mappings, METH_VARARGS,
     "decode_user_mappings(data, limit, bad, too_many, values=None, message_values=None, /)\n"
     "    -> list[dict]\n\n"
     "The UserMappingDto values (field 1) of a UserMappingDtoList.\n" DOC_TAIL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "rawexport.ingest._trackerpb",
    "GrowingIO's CDP protobuf bodies to dicts; see rawexport.ingest.trackerpb.", -1, methods,
};

static int
intern_keys(const Def *defs, size_t n, PyObject **keys)
{
    for (size_t i = 0; i < n; i++) {
        if (defs[i].name == NULL)
            continue;
        keys[i] = PyUnicode_InternFromString(defs[i].name);
        if (keys[i] == NULL)
            return -1;
    }
    return 0;
}

PyMODINIT_FUNC
PyInit__trackerpb(void)
{
    if (intern_keys(event_defs, EVENT_MAX + 1, event_keys) < 0 ||
        intern_keys(resource_defs, RESOURCE_MAX + 1, resource_keys) < 0 ||
        intern_keys(item_defs, ITEM_MAX + 1, item_keys) < 0 ||
        intern_keys(mapping_defs, MAPPING_MAX + 1, mapping_keys) < 0)
        return NULL;
    for (int i = 0; i < N_TYPES; i++) {
        type_strs[i] = PyUnicode_InternFromString(type_names[i]);
        if (type_strs[i] == NULL)
            return NULL;
    }
    empty_str = PyUnicode_FromStringAndSize(NULL, 0);
    event_type_key = Py_NewRef(event_keys[6]);
    sixty_four = PyLong_FromLong(64);
    if (empty_str == NULL || sixty_four == NULL)
        return NULL;
    return PyModule_Create(&module);
}
