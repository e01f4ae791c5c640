/* The REST server's prediction-log records of a run of one-row JSON requests, as JSON lines, in one
 * C call: modeldeploy_serving._predlog_lines.one_row_lines(items, spec).
 *
 * Why C: the same records made by mapping C functions over columns from Python (the encoder this
 * replaces) cost 22,900 instructions a record, spread over about ten parts of 1,000-4,000 (each a
 * list of n new objects); no single trim was worth more than 0.4 us a request, and the whole log
 * cost the model server about 10% of its HTTP throughput (callgrind and wrk, docs/benchmarks.md,
 * 2026-12-06). Here each record is read once from the queued item and written into one buffer.
 *
 * The contract (checked byte for byte against RecordEncoder.one, tests/unit/serving/
 * test_predlog_batch.py, over hostile values): every line equals orjson.dumps of the record's dict
 * (RestRecords.body) plus "\n". Anything this code does not write exactly as orjson would (a string
 * that needs escaping, a request with no model, many rows, numpy rows, a body id that is not a
 * string, model calls whose outputs differ in names or dimensions) makes it return None before any
 * request id is made, and the caller writes that run record by record. Numbers are never formatted
 * here: they go through one call of `dumps` (orjson) for the whole run, which writes them as it
 * writes them in a record, and their texts are cut at its commas.
 *
 * items: [(encoder, request_id or None, headers, model, (rows, prediction, body_id) or None, status,
 *          seconds, time), ...] (InferenceApp._log)
 * spec:  (model, ListRows, columns, pseudonymise, token, output_names, output_ndims, row_texts,
 *         id_headers, made_prefix, made_ids, dumps, pieces)
 *   columns, pseudonymise: the policy's plan (the logged features' columns, and whether each is
 *     pseudonymised by `token`, the policy's LRU); output_names/ndims: what every model call's
 *     batch_outputs must be; row_texts: protocol.v2.row_texts; id_headers: header names of a request
 *     id; made_prefix + str(next(made_ids)): the id of a request that brought none; pieces: the
 *     line's fixed bytes around its slots (id, time, each input, each output, latency, status).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    const char *p;
    Py_ssize_t n;
    Py_ssize_t num; /* >= 0: the text is number `num` of the run's dumps; p and n set after it */
} text_t;

typedef struct {
    Py_ssize_t id_made; /* >= 0: the id is made here (its digits in made[]) */
    PyObject *texts;    /* borrowed: row_texts of the record's model call */
    Py_ssize_t start;   /* the record's row in it */
    long status;
} record_t;

static PyObject *s_rows, *s_values, *s_start, *s_stop, *s_batch_cache, *s_batch_outputs, *s_ndim;

static const char T_NULL[] = "null", T_TRUE[] = "true", T_FALSE[] = "false";

/* Printable ASCII but for '"' and '\\': what orjson writes between quotes as it is. A table, not
 * four comparisons a byte: the check was 1,000 instructions a record of the bench's two pseudonyms
 * (callgrind, 2026-12-06). */
static unsigned char PLAIN[256];

static int plain(const char *p, Py_ssize_t n) {
    unsigned char ok = 1;
    for (Py_ssize_t i = 0; i < n; i++) ok &= PLAIN[(unsigned char)p[i]];
    return ok;
}

/* The decimal digits of v at w; returns their count. snprintf cost 1,870 instructions a record for
 * a made id and a status (callgrind, 2026-12-06). */
static Py_ssize_t put_digits(char *w, long long v) {
    char digits[24];
    Py_ssize_t n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) digits[n++] = '-';
    for (Py_ssize_t i = 0; i < n; i++) w[i] = digits[n - 1 - i];
    return n;
}

/* A str written as it is between quotes: 1 and its text; 0 when it is not one. */
static int str_text(PyObject *s, text_t *out) {
    if (!PyUnicode_CheckExact(s) || !PyUnicode_IS_ASCII(s)) return 0;
    out->p = (const char *)PyUnicode_DATA(s);
    out->n = PyUnicode_GET_LENGTH(s);
    out->num = -1;
    return plain(out->p, out->n);
}

static int append_num(PyObject *nums, PyObject *value, text_t *out) {
    out->num = PyList_GET_SIZE(nums);
    out->p = NULL;
    out->n = 0;
    return PyList_Append(nums, value);
}

/* The request id from a header (app._request_id): the first id header with a value, its first 256
 * bytes (latin-1 characters). 1 found, 0 none, -1 not writable here (the caller gives up). */
static int header_id(PyObject *headers, PyObject *names, text_t *out) {
    if (headers == Py_None) return 0;
    if (!PyList_CheckExact(headers)) return -1;
    Py_ssize_t n = PyList_GET_SIZE(headers), k = PyTuple_GET_SIZE(names);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) return -1;
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(value)) return -1;
        Py_ssize_t len = PyBytes_GET_SIZE(name);
        for (Py_ssize_t j = 0; j < k; j++) {
            PyObject *want = PyTuple_GET_ITEM(names, j);
            if (PyBytes_GET_SIZE(want) == len && memcmp(PyBytes_AS_STRING(want), PyBytes_AS_STRING(name), len) == 0) {
                Py_ssize_t size = PyBytes_GET_SIZE(value);
                if (size == 0) break; /* an empty value is no id: the next header may be */
                out->p = PyBytes_AS_STRING(value);
                out->n = size > 256 ? 256 : size;
                out->num = -1;
                return plain(out->p, out->n) ? 1 : -1;
            }
        }
    }
    return 0;
}

static Py_ssize_t as_index(PyObject *o) {
    if (!PyLong_CheckExact(o)) return -1;
    Py_ssize_t v = PyLong_AsSsize_t(o);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return v;
}

/* Whether a model call's outputs have the names, order and dimensions of the run's template. */
static int same_outputs(PyObject *prediction, PyObject *names, PyObject *ndims) {
    PyObject *outputs = PyObject_GetAttr(prediction, s_batch_outputs);
    if (outputs == NULL) return -1;
    int ok = PyDict_CheckExact(outputs) && PyDict_GET_SIZE(outputs) == PyTuple_GET_SIZE(names);
    Py_ssize_t pos = 0, k = 0;
    PyObject *key, *array;
    while (ok && PyDict_Next(outputs, &pos, &key, &array)) {
        PyObject *want = PyTuple_GET_ITEM(names, k);
        int eq = key == want ? 1 : PyObject_RichCompareBool(key, want, Py_EQ);
        if (eq < 0) {
            Py_DECREF(outputs);
            return -1;
        }
        PyObject *ndim = eq ? PyObject_GetAttr(array, s_ndim) : NULL;
        if (eq && ndim == NULL) {
            Py_DECREF(outputs);
            return -1;
        }
        ok = eq && PyLong_CheckExact(ndim) && as_index(ndim) == as_index(PyTuple_GET_ITEM(ndims, k));
        Py_XDECREF(ndim);
        k++;
    }
    Py_DECREF(outputs);
    return ok;
}

#define GIVE_UP()      \
    do {               \
        result = NULL; \
        goto none;     \
    } while (0)

static PyObject *one_row_lines(PyObject *self, PyObject *args) {
    PyObject *items, *spec;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &items, &PyTuple_Type, &spec)) return NULL;
    PyObject *model, *list_rows, *columns, *pseudonymise, *token, *out_names, *out_ndims, *row_texts,
        *id_headers, *made_prefix, *made_ids, *dumps, *pieces;
    if (!PyArg_ParseTuple(spec, "OOO!O!OO!O!OO!O!OOO!", &model, &list_rows, &PyTuple_Type, &columns,
                          &PyTuple_Type, &pseudonymise, &token, &PyTuple_Type, &out_names, &PyTuple_Type,
                          &out_ndims, &row_texts, &PyTuple_Type, &id_headers, &PyUnicode_Type, &made_prefix,
                          &made_ids, &dumps, &PyTuple_Type, &pieces))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items), m = PyTuple_GET_SIZE(columns), k = PyTuple_GET_SIZE(out_names);
    Py_ssize_t slots = 2 + m + k + 2;
    if (PyTuple_GET_SIZE(pseudonymise) != m || PyTuple_GET_SIZE(out_ndims) != k ||
        PyTuple_GET_SIZE(pieces) != slots + 1) {
        PyErr_SetString(PyExc_ValueError, "one_row_lines: the spec's parts do not fit together");
        return NULL;
    }
    for (Py_ssize_t j = 0; j < slots + 1; j++)
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(pieces, j))) {
            PyErr_SetString(PyExc_TypeError, "one_row_lines: pieces must be bytes");
            return NULL;
        }
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(id_headers); j++)
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(id_headers, j))) {
            PyErr_SetString(PyExc_TypeError, "one_row_lines: id header names must be bytes");
            return NULL;
        }
    text_t prefix;
    if (n == 0) return PyBytes_FromStringAndSize(NULL, 0);
    if (!str_text(made_prefix, &prefix)) Py_RETURN_NONE;

    PyObject *result = NULL, *nums = NULL, *keep = NULL, *numbers = NULL, *last_cache = NULL,
             *last_texts = NULL;
    /* every field of both is set in pass 1 before it is read (no calloc: its memset was 350
       instructions a record) */
    record_t *records = PyMem_Malloc(n * sizeof(record_t));
    text_t *texts = PyMem_Malloc((size_t)n * (size_t)(m + 3) * sizeof(text_t)); /* id, time, inputs, latency */
    long long *made = NULL;
    if (records == NULL || texts == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    nums = PyList_New(0);
    keep = PyList_New(0); /* held to the end: pseudonyms, rows' values, model calls' texts */
    if (nums == NULL || keep == NULL) goto fail;
    Py_ssize_t n_made = 0;

    /* Pass 1: read and check every record; numbers queued for one dumps; nothing made yet. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        record_t *r = &records[i];
        text_t *t = &texts[i * (m + 3)];
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 8) GIVE_UP();
        PyObject *request_id = PyTuple_GET_ITEM(item, 1), *headers = PyTuple_GET_ITEM(item, 2),
                 *logged = PyTuple_GET_ITEM(item, 4), *status = PyTuple_GET_ITEM(item, 5),
                 *seconds = PyTuple_GET_ITEM(item, 6), *at = PyTuple_GET_ITEM(item, 7);
        if (PyTuple_GET_ITEM(item, 3) != model || !PyTuple_CheckExact(logged) || PyTuple_GET_SIZE(logged) != 3 ||
            !PyLong_CheckExact(status) || !PyFloat_CheckExact(seconds) || !PyFloat_CheckExact(at))
            GIVE_UP();
        PyObject *rows = PyTuple_GET_ITEM(logged, 0), *prediction = PyTuple_GET_ITEM(logged, 1),
                 *body_id = PyTuple_GET_ITEM(logged, 2);
        r->status = PyLong_AsLong(status);
        if (r->status == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            GIVE_UP();
        }
        /* the request id: as app._request_id_of (a queued one, a header's, the body's, or made) */
        r->id_made = -1;
        t[0].num = -1;
        if (request_id != Py_None) {
            if (!str_text(request_id, &t[0])) GIVE_UP();
        } else {
            int found = header_id(headers, id_headers, &t[0]);
            if (found < 0) GIVE_UP();
            if (!found) {
                if (body_id != Py_None) {
                    if (!str_text(body_id, &t[0])) GIVE_UP();
                } else
                    r->id_made = n_made++;
            }
        }
        if (append_num(nums, at, &t[1]) < 0) goto fail;
        PyObject *latency = PyFloat_FromDouble(PyFloat_AS_DOUBLE(seconds) * 1000.0);
        if (latency == NULL) goto fail;
        int appended = append_num(nums, latency, &t[2 + m]);
        Py_DECREF(latency);
        if (appended < 0) goto fail;
        /* the inputs: one JSON row, the policy's columns (PiiPolicy.apply_rows of one row) */
        if ((PyObject *)Py_TYPE(rows) != list_rows) GIVE_UP();
        PyObject *count = PyObject_GetAttr(rows, s_rows);
        if (count == NULL) goto fail;
        Py_ssize_t one = as_index(count);
        Py_DECREF(count);
        if (one != 1) GIVE_UP();
        PyObject *values = PyObject_GetAttr(rows, s_values);
        if (values == NULL) goto fail;
        /* held by `keep` to the end: a token's Python code (an LRU miss) must not see it freed */
        int values_kept = PyList_Append(keep, values);
        Py_DECREF(values);
        if (values_kept < 0) goto fail;
        if (!PyList_CheckExact(values)) GIVE_UP();
        for (Py_ssize_t j = 0; j < m; j++) {
            Py_ssize_t column = as_index(PyTuple_GET_ITEM(columns, j));
            if (column < 0 || column >= PyList_GET_SIZE(values)) GIVE_UP();
            PyObject *value = PyList_GET_ITEM(values, column);
            text_t *slot = &t[2 + j];
            slot->num = -1;
            if (PyTuple_GET_ITEM(pseudonymise, j) == Py_True) {
                PyObject *pseudonym = PyObject_CallOneArg(token, value);
                if (pseudonym == NULL) {
                    if (!PyErr_ExceptionMatches(PyExc_TypeError)) goto fail;
                    PyErr_Clear(); /* unhashable: the reference computes it without the LRU */
                    GIVE_UP();
                }
                int kept = PyList_Append(keep, pseudonym);
                Py_DECREF(pseudonym);
                if (kept < 0) goto fail;
                if (!str_text(pseudonym, slot)) GIVE_UP();
                slot->n = -slot->n - 1; /* a string: quoted when written */
            } else if (PyFloat_CheckExact(value) || PyLong_CheckExact(value)) {
                if (append_num(nums, value, slot) < 0) goto fail;
            } else if (value == Py_None) {
                slot->p = T_NULL, slot->n = 4;
            } else if (value == Py_True) {
                slot->p = T_TRUE, slot->n = 4;
            } else if (value == Py_False) {
                slot->p = T_FALSE, slot->n = 5;
            } else if (str_text(value, slot)) {
                slot->n = -slot->n - 1;
            } else
                GIVE_UP();
        }
        /* the outputs: the record's row of its model call's texts (protocol.v2.row_texts) */
        PyObject *start = PyObject_GetAttr(prediction, s_start);
        if (start == NULL) goto fail;
        PyObject *stop = PyObject_GetAttr(prediction, s_stop);
        if (stop == NULL) {
            Py_DECREF(start);
            goto fail;
        }
        r->start = as_index(start);
        Py_ssize_t end = as_index(stop);
        Py_DECREF(start);
        Py_DECREF(stop);
        if (r->start < 0 || end != r->start + 1) GIVE_UP();
        PyObject *cache = PyObject_GetAttr(prediction, s_batch_cache);
        if (cache == NULL) goto fail;
        Py_DECREF(cache); /* held by the prediction; only its identity is used */
        if (cache != last_cache) { /* a new model call: its texts, and its outputs checked */
            int same = same_outputs(prediction, out_names, out_ndims);
            if (same < 0) goto fail;
            if (!same) GIVE_UP();
            PyObject *batch_texts = PyObject_CallOneArg(row_texts, prediction);
            if (batch_texts == NULL) goto fail;
            int kept = PyList_Append(keep, batch_texts);
            Py_DECREF(batch_texts);
            if (kept < 0) goto fail;
            if (!PyList_CheckExact(batch_texts) || PyList_GET_SIZE(batch_texts) != k) GIVE_UP();
            for (Py_ssize_t j = 0; j < k; j++) {
                PyObject *column = PyList_GET_ITEM(batch_texts, j);
                if (!PyList_CheckExact(column)) GIVE_UP();
            }
            last_cache = cache;
            last_texts = batch_texts;
        }
        r->texts = last_texts;
        for (Py_ssize_t j = 0; j < k; j++) {
            PyObject *column = PyList_GET_ITEM(last_texts, j);
            if (r->start >= PyList_GET_SIZE(column) || !PyBytes_CheckExact(PyList_GET_ITEM(column, r->start)))
                GIVE_UP();
        }
    }

    /* The run's numbers, written by orjson in one call, cut at its commas (numbers hold none). */
    numbers = PyObject_CallOneArg(dumps, nums);
    if (numbers == NULL) goto fail;
    if (!PyBytes_CheckExact(numbers)) GIVE_UP();
    Py_ssize_t n_nums = PyList_GET_SIZE(nums);
    text_t *cut = PyMem_Malloc((n_nums ? n_nums : 1) * sizeof(text_t));
    if (cut == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    {
        const char *p = PyBytes_AS_STRING(numbers), *end = p + PyBytes_GET_SIZE(numbers);
        Py_ssize_t found = 0;
        if (end - p < 2 || p[0] != '[' || end[-1] != ']') found = -1;
        p++, end--;
        while (found >= 0 && p < end) {
            const char *comma = memchr(p, ',', end - p);
            const char *stop = comma ? comma : end;
            if (found >= n_nums) {
                found = -1;
                break;
            }
            cut[found].p = p, cut[found].n = stop - p;
            found++;
            p = comma ? comma + 1 : end;
        }
        if (found != n_nums) {
            PyMem_Free(cut);
            GIVE_UP();
        }
    }
    /* Everything is known: from here nothing gives up, so the made ids are used only now. */
    made = PyMem_Malloc((n_made ? n_made : 1) * sizeof *made);
    if (made == NULL) {
        PyMem_Free(cut);
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n_made; i++) {
        PyObject *next = PyIter_Next(made_ids);
        if (next == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "one_row_lines: the ids ran out");
            PyMem_Free(cut);
            goto fail;
        }
        made[i] = PyLong_AsLongLong(next);
        Py_DECREF(next);
        if (made[i] == -1 && PyErr_Occurred()) {
            PyMem_Free(cut);
            goto fail;
        }
    }
    Py_ssize_t total = 0, width = m + 3;
    for (Py_ssize_t j = 0; j < slots + 1; j++) total += PyBytes_GET_SIZE(PyTuple_GET_ITEM(pieces, j));
    total *= n;
    for (Py_ssize_t i = 0; i < n; i++) {
        record_t *r = &records[i];
        text_t *t = &texts[i * width];
        for (Py_ssize_t j = 0; j < width; j++) {
            if (t[j].num >= 0) t[j].p = cut[t[j].num].p, t[j].n = cut[t[j].num].n;
            if (j == 0 && r->id_made >= 0) continue;
            total += t[j].n < 0 ? -t[j].n - 1 + 2 : t[j].n;
        }
        if (r->id_made >= 0) total += prefix.n + 21 + 2; /* at most 20 digits and a sign */
        else total += 2; /* the id's quotes */
        for (Py_ssize_t j = 0; j < k; j++) total += PyBytes_GET_SIZE(PyList_GET_ITEM(PyList_GET_ITEM(r->texts, j), r->start));
        total += 24; /* the status's digits and quotes, at most */
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) {
        PyMem_Free(cut);
        goto fail;
    }
    char *w = PyBytes_AS_STRING(result);
#define PUT(src, len)                 \
    do {                              \
        memcpy(w, (src), (size_t)(len)); \
        w += (len);                   \
    } while (0)
#define PIECE(j) PUT(PyBytes_AS_STRING(PyTuple_GET_ITEM(pieces, (j))), PyBytes_GET_SIZE(PyTuple_GET_ITEM(pieces, (j))))
#define TEXT(x)                                \
    do {                                       \
        if ((x).n < 0) {                       \
            *w++ = '"';                        \
            PUT((x).p, -(x).n - 1);            \
            *w++ = '"';                        \
        } else                                 \
            PUT((x).p, (x).n);                 \
    } while (0)
    for (Py_ssize_t i = 0; i < n; i++) {
        record_t *r = &records[i];
        text_t *t = &texts[i * width];
        PIECE(0);
        *w++ = '"';
        if (r->id_made >= 0) {
            PUT(prefix.p, prefix.n);
            w += put_digits(w, made[r->id_made]);
        } else
            PUT(t[0].p, t[0].n);
        *w++ = '"';
        PIECE(1);
        TEXT(t[1]);
        for (Py_ssize_t j = 0; j < m; j++) {
            PIECE(2 + j);
            TEXT(t[2 + j]);
        }
        for (Py_ssize_t j = 0; j < k; j++) {
            PIECE(2 + m + j);
            PyObject *row = PyList_GET_ITEM(PyList_GET_ITEM(r->texts, j), r->start);
            PUT(PyBytes_AS_STRING(row), PyBytes_GET_SIZE(row));
        }
        PIECE(2 + m + k);
        TEXT(t[2 + m]);
        PIECE(3 + m + k);
        *w++ = '"';
        w += put_digits(w, r->status);
        *w++ = '"';
        PIECE(4 + m + k);
    }
    PyMem_Free(cut);
    if (_PyBytes_Resize(&result, w - PyBytes_AS_STRING(result)) < 0) result = NULL;
    goto done;

none:
    result = Py_None;
    Py_INCREF(result);
    goto done;
fail:
    result = NULL;
done:
    PyMem_Free(records);
    PyMem_Free(texts);
    PyMem_Free(made);
    Py_XDECREF(nums);
    Py_XDECREF(keep);
    Py_XDECREF(numbers);
    return result;
}

static PyMethodDef methods[] = {
    {"one_row_lines", one_row_lines, METH_VARARGS,
     "one_row_lines(items, spec) -> bytes | None: the records' JSON lines (see the module's source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_predlog_lines",
                                    "The prediction log's one-row REST records, encoded in C.", -1, methods};

PyMODINIT_FUNC PyInit__predlog_lines(void) {
    for (int c = 0x20; c < 0x7f; c++) PLAIN[c] = c != '"' && c != '\\';
#define INTERN(var, name) \
    if ((var = PyUnicode_InternFromString(name)) == NULL) return NULL
    INTERN(s_rows, "rows");
    INTERN(s_values, "values");
    INTERN(s_start, "start");
    INTERN(s_stop, "stop");
    INTERN(s_batch_cache, "batch_cache");
    INTERN(s_batch_outputs, "batch_outputs");
    INTERN(s_ndim, "ndim");
    return PyModule_Create(&module);
}
