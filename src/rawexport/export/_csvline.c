/*
 * GrowingIO-dialect CSV lines from Arrow columns, built without the GIL.
 *
 * build(n, columns, allocate[, dest]) -> (data, offsets, hashes)
 *   n        rows to build
 *   columns  one tuple (kind, quote, validity, a, b, c, offset) per field:
 *              STR32/STR64  a: int32/int64 value offsets, b: UTF-8 data
 *              DICT         a: int32 indices, b: int64 offsets and c: data of the dictionary
 *                           entries, already encoded (see encode), written verbatim
 *              INT64        a: int64 values, written in decimal
 *            validity is the validity bitmap or None (no nulls); offset the array's logical
 *            offset into its buffers; quote applies to STR32/STR64 only.
 *   allocate called with a size, returns a writable buffer of that size (pa.allocate_buffer:
 *            Arrow's pool reuses memory, where fresh bytes objects fault in every page)
 *   dest     optional int64 buffer: the output position of each row (a permutation), so
 *            rows come out already grouped without moving their lines again
 *
 * Each line is the fields joined by ',' and ended by '\n'. A null is an empty field. A
 * quoted value is enclosed in '"' when it holds ',', '"', '\\', '\n' or '\r', and inside
 * the quotes every '"' and '\\' is preceded by '\\' (never a doubled quote).
 * data is the lines back to back, offsets n + 1 int64 (a large_string array's offsets),
 * hashes n uint64: a 64-bit hash of each whole line, the tie-break between equal sort keys.
 *
 * encode(n, column, allocate) -> (data, offsets): each value of one STR32/STR64 column as a
 * quoted field would be written (nulls empty), as a large_string array's buffers.
 *
 * gather(lines, chunk, row, allocate) -> (data, offsets): see gather in _csvline_gather.c.
 *
 * bucket(n, column, bounds) -> bytes of n uint16: for each value of a STR32/STR64 column, how
 * many of the sorted bounds (bytes) are <= it (byte order, as DuckDB compares VARCHAR);
 * nulls get len(bounds) + 1.
 *
 * order(n, keys, hashes, out) -> None: out (n int64) gets the rows 0..n-1 sorted by the
 * key columns (STR32/STR64 by bytes, INT64 by value, nulls last in each) and then by
 * hashes (n uint64), as DuckDB's ORDER BY k0, k1, ..., h ASC NULLS LAST orders them.
 *
 * This file: the module and the parsing of column tuples and out buffers; build and encode
 * are in _csvline_build.c, gather and bucket in _csvline_gather.c, order in
 * _csvline_sort.c, what they share in _csvline.h.
 */
#include "_csvline.h"

#define MAX_COLUMNS 4096

unsigned char special[256];

/* size writable bytes from allocate(size); on success out holds the object and its view. */
int
allocate_buffer(PyObject *allocate, Py_ssize_t size, out_buffer *out)
{
    out->owner = PyObject_CallFunction(allocate, "n", size);
    if (out->owner == NULL)
        return -1;
    if (PyObject_GetBuffer(out->owner, &out->view, PyBUF_WRITABLE) < 0) {
        Py_CLEAR(out->owner);
        return -1;
    }
    if (out->view.len < size) {
        PyBuffer_Release(&out->view);
        Py_CLEAR(out->owner);
        PyErr_SetString(PyExc_ValueError, "allocate returned a short buffer");
        return -1;
    }
    return 0;
}

void
drop_buffer(out_buffer *b)
{
    if (b->owner != NULL) {
        PyBuffer_Release(&b->view);
        Py_CLEAR(b->owner);
    }
}

static void
release_column(column *col)
{
    if (col->has_validity)
        PyBuffer_Release(&col->validity);
    if (col->held_a)
        PyBuffer_Release(&col->a);
    if (col->held_b)
        PyBuffer_Release(&col->b);
    if (col->held_c)
        PyBuffer_Release(&col->c);
    col->has_validity = col->held_a = col->held_b = col->held_c = 0;
}

void
release(column *cols, Py_ssize_t ncols)
{
    for (Py_ssize_t j = 0; j < ncols; j++)
        release_column(&cols[j]);
}

static int
get_buffer(PyObject *obj, Py_buffer *view, int *held)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    *held = 1;
    return 0;
}

static int
bad_column(const char *why)
{
    PyErr_SetString(PyExc_ValueError, why);
    return -1;
}

/* Parse one column tuple for n rows; on failure nothing is held. */
static int
parse_column(PyObject *item, column *col, Py_ssize_t n)
{
    PyObject *validity, *a, *b, *c;
    int quote;
    memset(col, 0, sizeof(*col));
    if (!PyArg_ParseTuple(item, "ipOOOOn", &col->kind, &quote, &validity, &a, &b, &c,
                          &col->offset))
        return -1;
    col->quote = quote;
    if (col->kind < STR32 || col->kind > INT64)
        return bad_column("unknown column kind");
    if (col->offset < 0)
        return bad_column("negative array offset");
    if (validity != Py_None) {
        if (PyObject_GetBuffer(validity, &col->validity, PyBUF_SIMPLE) < 0)
            return -1;
        col->has_validity = 1;
        if (col->validity.len * 8 < col->offset + n)
            goto short_buffers;
    }
    if (get_buffer(a, &col->a, &col->held_a) < 0)
        goto fail;
    if (col->kind != INT64 && get_buffer(b, &col->b, &col->held_b) < 0)
        goto fail;
    if (col->kind == DICT && get_buffer(c, &col->c, &col->held_c) < 0)
        goto fail;
    Py_ssize_t width = col->kind == STR32 || col->kind == DICT ? 4 : 8;
    Py_ssize_t need = col->offset + n + (col->kind <= STR64 ? 1 : 0);
    col->items = col->a.len / width;
    if (col->items < need)
        goto short_buffers;
    if (col->kind == DICT) {
        col->items = col->b.len / 8 - 1; /* entries */
        if (col->items < 0)
            goto short_buffers;
        /* Every entry's offsets, once: rows then need only their index checked. */
        const int64_t *eo = (const int64_t *)col->b.buf;
        if (eo[0] < 0 || eo[col->items] > col->c.len)
            goto outside;
        for (Py_ssize_t e = 0; e < col->items; e++)
            if (eo[e + 1] < eo[e])
                goto outside;
    }
    else if (col->kind <= STR64) {
        int64_t lo = str_offset(col, col->offset), hi = str_offset(col, col->offset + n);
        if (lo < 0 || hi < lo || hi > col->b.len)
            goto outside;
    }
    return 0;
short_buffers:
    release_column(col);
    return bad_column("column buffers shorter than the rows asked for");
outside:
    release_column(col);
    return bad_column("column offsets outside its data");
fail:
    release_column(col);
    return -1;
}

/* Parse the columns sequence into a fresh array; returns it (ncols set) or NULL. */
column *
parse_columns(PyObject *seq, Py_ssize_t n, Py_ssize_t *ncols)
{
    PyObject *fast = PySequence_Fast(seq, "columns must be a sequence");
    if (fast == NULL)
        return NULL;
    *ncols = PySequence_Fast_GET_SIZE(fast);
    if (*ncols < 1 || *ncols > MAX_COLUMNS) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "between 1 and 4096 columns");
        return NULL;
    }
    column *cols = PyMem_Calloc((size_t)*ncols, sizeof(column));
    if (cols == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t j = 0; j < *ncols; j++) {
        if (parse_column(PySequence_Fast_GET_ITEM(fast, j), &cols[j], n) < 0) {
            release(cols, j);
            PyMem_Free(cols);
            Py_DECREF(fast);
            return NULL;
        }
    }
    Py_DECREF(fast);
    return cols;
}

/* Parse a single STR32/STR64 column for n rows (encode, bucket). */
column *
parse_text_column(PyObject *item, Py_ssize_t n)
{
    PyObject *one = PyTuple_Pack(1, item);
    if (one == NULL)
        return NULL;
    Py_ssize_t ncols;
    column *col = parse_columns(one, n, &ncols);
    Py_DECREF(one);
    if (col != NULL && col->kind > STR64) {
        release(col, 1);
        PyMem_Free(col);
        PyErr_SetString(PyExc_ValueError, "a text column is needed");
        return NULL;
    }
    return col;
}

static PyMethodDef methods[] = {
    {"build", build, METH_VARARGS,
     "build(n, columns, allocate) -> (data, offsets, hashes): GrowingIO-dialect CSV lines."},
    {"encode", encode, METH_VARARGS,
     "encode(n, column, allocate) -> (data, offsets): each value as a quoted field."},
    {"gather", gather, METH_VARARGS,
     "gather(lines, chunk, row, allocate) -> (data, offsets): lines picked by index."},
    {"bucket", bucket, METH_VARARGS,
     "bucket(n, column, bounds) -> uint16 range number of each value (nulls last)."},
    {"order", order, METH_VARARGS,
     "order(n, keys, hashes, out) -> None: out = the rows by keys (nulls last), then hash."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "rawexport.export._csvline",
    "GrowingIO-dialect CSV lines from Arrow columns.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__csvline(void)
{
    special[(unsigned char)','] = 1;
    special[(unsigned char)'\n'] = 1;
    special[(unsigned char)'\r'] = 1;
    special[(unsigned char)'"'] = 3;
    special[(unsigned char)'\\'] = 3;
    return PyModule_Create(&module);
}
