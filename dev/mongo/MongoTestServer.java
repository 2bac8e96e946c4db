// MongoDB test server for the local stack (dev/stack): mongo-java-server with our own oplog, so
// change streams behave like MongoDB's for what this project relies on, and the H2 backend, so
// data and the oplog survive a restart.
//
// Run as a single-file source program (classpath resolved by dev/mongo/pom.xml):
//   java -cp '<STACK_DIR>/mongo/lib/*' dev/mongo/MongoTestServer.java \
//        [--host 127.0.0.1] [--port 27027] [--data <file>] [--backend h2|memory] [--version 6.0|7.0]
// Each option falls back to an environment variable: MONGO_HOST, MONGO_PORT, MONGO_DATA_FILE,
// MONGO_BACKEND, MONGO_REPORTED_VERSION.
//
// Prints "mongo-java-server ready on <host>:<port>" once it accepts connections. SIGTERM shuts the
// server down and closes the backend (H2: flushes and closes the MVStore file).
//
// Why our own oplog: the library's CollectionBackedOplog loses events on collection names with a
// dot, puts the update spec into documentKey, has no replace/ns/updateDescription, answers
// invalidate to any resume after an earlier drop, and rescans the whole oplog on every getMore.
// Everything below is written for this project (docs/test-stack.md lists what still differs from
// a replica set); it hooks into the server only through public/protected extension points:
// AbstractMongoBackend.createOplog(), handleCommand(), handleGetMore() and dropDatabase(), and
// wires the network side itself (StackServer) from the library's public codec and handlers, to
// hold back a change stream's getMore until a change (awaitData) and add replica-set reply fields.
// It also adds MongoDB 6.0's change-stream pre- and post-images (collection option
// changeStreamPreAndPostImages, set with create or collMod; fullDocument whenAvailable/required,
// fullDocumentBeforeChange), which the library lacks.
// And a query naming one exact `_id` among other conditions is served from the `_id` index
// (EqualityFirstIndex) as MongoDB serves it; the library scans the whole collection for it.
// And MongoDB's fault injection for tests: configureFailPoint with failCommand and
// failGetMoreAfterCursorCheckout (FailPoints, applied per request by StackWireHandler), always
// enabled here (MongoDB needs --setParameter enableTestCommands=1), plus our own
// storefrontStarveChangeStream, which is not MongoDB's.

import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.MongoDatabase;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.AbstractCursor;
import de.bwaldvogel.mongo.backend.AbstractMongoBackend;
import de.bwaldvogel.mongo.backend.Cursor;
import de.bwaldvogel.mongo.backend.CursorRegistry;
import de.bwaldvogel.mongo.backend.Index;
import de.bwaldvogel.mongo.backend.IndexKey;
import de.bwaldvogel.mongo.backend.QueryParameters;
import de.bwaldvogel.mongo.backend.Utils;
import de.bwaldvogel.mongo.backend.aggregation.Aggregation;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.h2.H2Database;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import de.bwaldvogel.mongo.backend.memory.MemoryDatabase;
import de.bwaldvogel.mongo.bson.BsonRegularExpression;
import de.bwaldvogel.mongo.bson.BsonTimestamp;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.exception.KeyConstraintError;
import de.bwaldvogel.mongo.exception.MongoServerError;
import de.bwaldvogel.mongo.exception.MongoServerException;
import de.bwaldvogel.mongo.oplog.Oplog;
import de.bwaldvogel.mongo.wire.MongoDatabaseHandler;
import de.bwaldvogel.mongo.wire.MongoExceptionHandler;
import de.bwaldvogel.mongo.wire.MongoWireMessageEncoder;
import de.bwaldvogel.mongo.wire.MongoWireProtocolHandler;
import de.bwaldvogel.mongo.wire.MongoWireReplyEncoder;
import de.bwaldvogel.mongo.wire.message.MessageHeader;
import de.bwaldvogel.mongo.wire.message.MongoMessage;
import de.bwaldvogel.mongo.wire.message.MongoQuery;
import de.bwaldvogel.mongo.wire.message.MongoReply;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.channel.Channel;
import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.ChannelPromise;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.group.ChannelGroup;
import io.netty.channel.group.DefaultChannelGroup;
import io.netty.channel.nio.NioEventLoopGroup;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import org.h2.mvstore.MVMap;
import org.h2.mvstore.MVStore;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Clock;
import java.time.Instant;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Supplier;
import java.util.stream.Stream;

public class MongoTestServer {

    /**
     * The version the server reports in hello/isMaster and buildInfo. The library's own
     * ServerVersion values stop at "5.0" with wire version 8, but the Rust mongodb 3.x driver needs
     * wire version >= 9, and from wire version 25 (MongoDB 8.0) it sends the bulkWrite command,
     * which mongo-java-server lacks. Only the reported numbers change: the server's behaviour
     * does not depend on them.
     */
    enum ReportedVersion implements MongoVersion {
        MONGO_6_0("6.0", List.of(6, 0, 0), 17),
        MONGO_7_0("7.0", List.of(7, 0, 0), 21);

        final String name;
        private final List<Integer> versionArray;
        private final int wireVersion;

        ReportedVersion(String name, List<Integer> versionArray, int wireVersion) {
            this.name = name;
            this.versionArray = versionArray;
            this.wireVersion = wireVersion;
        }

        @Override
        public List<Integer> getVersionArray() {
            return versionArray;
        }

        @Override
        public int getWireVersion() {
            return wireVersion;
        }

        static ReportedVersion parse(String s) {
            for (ReportedVersion v : values()) {
                if (v.name.equals(s)) {
                    return v;
                }
            }
            throw new IllegalArgumentException("unsupported --version '" + s + "' (use 6.0 or 7.0)");
        }
    }

    // ---------------------------------------------------------------------------------------
    // Backends. Both subclasses only forward to StackCore, which holds the behaviour; Java has no
    // mixins, so each backend exposes the few superclass calls the core needs (StackBackend).
    // MongoServer.enableOplog() calls createOplog() after construction.
    // ---------------------------------------------------------------------------------------

    /** What StackCore needs from a backend. */
    interface StackBackend {
        MongoDatabase resolveDatabase(String name);

        /** Without creating it (resolveDatabase would). */
        boolean hasDatabase(String name);

        CursorRegistry cursors();

        Clock getClock();

        /** Our behaviour (oplog, cursors, awaitData). */
        StackCore core();

        /** The backend's own command handling, without our hooks. */
        Document baseHandleCommand(Channel channel, String database, String command, Document query);
    }

    /** H2 MVStore backend: data and the oplog live in one file and survive a restart. */
    static class StackH2Backend extends H2Backend implements StackBackend {
        private final StackCore core;

        StackH2Backend(String file) {
            super(file);
            // Same MVStore as the data: one commit covers both, so a restart never finds events
            // for writes it lost, or writes without their events.
            core = new StackCore(this, getMvStore());
        }

        @Override
        protected Oplog createOplog() {
            return core.oplog;
        }

        @Override
        protected MongoDatabase openOrCreateDatabase(String databaseName) {
            return new StackH2Database(databaseName, getMvStore(), getCursorRegistry());
        }

        @Override
        public Document handleCommand(Channel channel, String database, String command, Document query) {
            return core.handleCommand(channel, database, command, query);
        }

        @Override
        protected Document handleGetMore(String database, String command, Document query) {
            return core.handleGetMore(database, command, query, () -> super.handleGetMore(database, command, query));
        }

        @Override
        public void dropDatabase(String database) {
            core.dropDatabase(database, () -> super.dropDatabase(database));
        }

        @Override
        public Document baseHandleCommand(Channel channel, String database, String command, Document query) {
            return super.handleCommand(channel, database, command, query);
        }

        @Override
        public boolean hasDatabase(String name) {
            return listDatabaseNames().contains(name);
        }

        @Override
        public CursorRegistry cursors() {
            return getCursorRegistry();
        }

        @Override
        public StackCore core() {
            return core;
        }
    }

    /** In-memory backend: keeps nothing across a restart (its oplog is an in-memory MVStore). */
    static class StackMemoryBackend extends MemoryBackend implements StackBackend {
        private final StackCore core = new StackCore(this, new MVStore.Builder().open());

        @Override
        protected Oplog createOplog() {
            return core.oplog;
        }

        @Override
        public MemoryDatabase openOrCreateDatabase(String databaseName) {
            return new StackMemoryDatabase(databaseName, getCursorRegistry());
        }

        @Override
        public Document handleCommand(Channel channel, String database, String command, Document query) {
            return core.handleCommand(channel, database, command, query);
        }

        @Override
        protected Document handleGetMore(String database, String command, Document query) {
            return core.handleGetMore(database, command, query, () -> super.handleGetMore(database, command, query));
        }

        @Override
        public void dropDatabase(String database) {
            core.dropDatabase(database, () -> super.dropDatabase(database));
        }

        @Override
        public Document baseHandleCommand(Channel channel, String database, String command, Document query) {
            return super.handleCommand(channel, database, command, query);
        }

        @Override
        public boolean hasDatabase(String name) {
            return listDatabaseNames().contains(name);
        }

        @Override
        public CursorRegistry cursors() {
            return getCursorRegistry();
        }

        @Override
        public StackCore core() {
            return core;
        }
    }

    static final class StackH2Database extends H2Database {
        StackH2Database(String databaseName, MVStore mvStore, CursorRegistry cursorRegistry) {
            super(databaseName, mvStore, cursorRegistry);
        }

        @Override
        protected Index<Object> openOrCreateUniqueIndex(String collectionName, String indexName,
                List<IndexKey> keys, boolean sparse) {
            return EqualityFirstIndex.wrap(super.openOrCreateUniqueIndex(collectionName, indexName, keys, sparse));
        }
    }

    static final class StackMemoryDatabase extends MemoryDatabase {
        StackMemoryDatabase(String databaseName, CursorRegistry cursorRegistry) {
            super(databaseName, cursorRegistry);
        }

        @Override
        protected Index<Integer> openOrCreateUniqueIndex(String collectionName, String indexName,
                List<IndexKey> keys, boolean sparse) {
            return EqualityFirstIndex.wrap(super.openOrCreateUniqueIndex(collectionName, indexName, keys, sparse));
        }
    }

    /**
     * A unique single-field index (above all `_id`'s) that also serves queries naming one exact
     * value of its field among other conditions, e.g. {_id: 7, "version": {$lt: 3}}: the index
     * gives the one candidate and the whole filter is then applied to it. The library's unique
     * index accepts only queries on exactly its own fields, so such a query scans the whole
     * collection (quadratic work for a stream of guarded upserts); MongoDB answers it from the
     * index. Any document matching the query has that value, and the index is unique, so the
     * candidate set is complete. Everything else is the wrapped index's.
     */
    static final class EqualityFirstIndex<P> extends Index<P> {
        private final Index<P> inner;
        private final String field;

        private EqualityFirstIndex(Index<P> inner) {
            super(inner.getName(), inner.getKeys(), Boolean.TRUE.equals(inner.toIndexDescription().get("sparse")));
            this.inner = inner;
            this.field = inner.getKeys().get(0).getKey();
        }

        static <P> Index<P> wrap(Index<P> index) {
            return index.isUnique() && index.getKeys().size() == 1 ? new EqualityFirstIndex<>(index) : index;
        }

        /** The query's exact value for the field, or null when it has none (or an operator). */
        private Document narrowed(Document query) {
            if (query.size() < 2 || !query.containsKey(field)) {
                return null;
            }
            Object value = query.get(field);
            // A list would be read as $in by the wrapped index; a regex or an operator
            // document is not one exact value.
            if (value == null || value instanceof Collection || BsonRegularExpression.isRegularExpression(value)) {
                return null;
            }
            if (value instanceof Document && ((Document) value).keySet().stream().anyMatch(k -> k.startsWith("$"))) {
                return null;
            }
            return new Document(field, value);
        }

        @Override
        public boolean canHandle(Document query) {
            return inner.canHandle(query) || narrowed(query) != null;
        }

        @Override
        public Iterable<P> getPositions(Document query) {
            if (inner.canHandle(query)) {
                return inner.getPositions(query);
            }
            return inner.getPositions(narrowed(query));
        }

        @Override
        public P getPosition(Document document) {
            return inner.getPosition(document);
        }

        @Override
        public void checkAdd(Document document, MongoCollection<P> collection) {
            inner.checkAdd(document, collection);
        }

        @Override
        public void add(Document document, P position, MongoCollection<P> collection) {
            inner.add(document, position, collection);
        }

        @Override
        public P remove(Document document) {
            return inner.remove(document);
        }

        @Override
        public long getCount() {
            return inner.getCount();
        }

        @Override
        public long getDataSize() {
            return inner.getDataSize();
        }

        @Override
        public void checkUpdate(Document oldDocument, Document newDocument, MongoCollection<P> collection) {
            inner.checkUpdate(oldDocument, newDocument, collection);
        }

        @Override
        public void updateInPlace(Document oldDocument, Document newDocument, P position, MongoCollection<P> collection)
                throws KeyConstraintError {
            inner.updateInPlace(oldDocument, newDocument, position, collection);
        }

        @Override
        public void drop() {
            inner.drop();
        }

        @Override
        public boolean isUnique() {
            return inner.isUnique();
        }

        @Override
        public Document toIndexDescription() {
            return inner.toIndexDescription();
        }

        @Override
        public boolean hasSameOptions(Index<?> other) {
            return inner.hasSameOptions(other instanceof EqualityFirstIndex ? ((EqualityFirstIndex<?>) other).inner : other);
        }
    }

    static AbstractMongoBackend createBackend(String kind, Path dataFile) throws IOException {
        switch (kind) {
            case "h2":
                if (dataFile.getParent() != null) {
                    Files.createDirectories(dataFile.getParent());
                }
                return new StackH2Backend(dataFile.toString());
            case "memory":
                return new StackMemoryBackend();
            default:
                throw new IllegalArgumentException("unknown backend '" + kind + "' (use h2 or memory)");
        }
    }

    // ---------------------------------------------------------------------------------------
    // Command hooks
    // ---------------------------------------------------------------------------------------

    /**
     * Intercepts the commands whose change events the library gets wrong or cannot see:
     * - every `$changeStream` aggregate (collection, database and cluster level) opens our cursor;
     * - writes run one at a time (a lock), so the oplog's order is the order the writes happened
     *   in, and pre-images taken just before a write are still current when it runs;
     * - insert: events only for the documents actually inserted (not for duplicate-key failures);
     * - update: pre-images for updateDescription;
     * - findAndModify (findOneAndUpdate/Replace/Delete): the library writes no oplog entry for it;
     * - renameCollection and dropDatabase: events the library has no oplog call for;
     * - create / collMod with changeStreamPreAndPostImages (the library ignores the option on
     *   create and has no collMod), listCollections reporting it; delete takes pre-images of
     *   the documents it removes when the collection has the option.
     */
    static final class StackCore {
        private static final Set<String> WRITES = Set.of("insert", "update", "delete", "findandmodify", "drop",
                "dropdatabase", "renamecollection", "create", "collmod");

        final StackBackend backend;
        final StackOplog oplog;
        private final ReentrantLock writeLock = new ReentrantLock();

        final AwaitData awaitData = new AwaitData();

        /** configureFailPoint's fail points (in memory: a restart turns them off, as on MongoDB). */
        final FailPoints failPoints = new FailPoints();

        StackCore(StackBackend backend, MVStore store) {
            this.backend = backend;
            this.oplog = new StackOplog(backend, store, awaitData::written);
            startCursorIdsAtRandom(backend.cursors());
        }

        /**
         * The change-stream cursor a getMore may wait on (awaitData): one of ours, named on its own
         * namespace; null for any other getMore, which is served at once (an unknown id reports
         * CursorNotFound, another namespace Unauthorized). Whether it has something to return is
         * AwaitData.await's to check, after it registered the wait.
         */
        ChangeStreamCursor awaitable(String database, Document command) {
            if (!(command.get("getMore") instanceof Number id)) {
                return null;
            }
            Cursor cursor;
            try {
                cursor = backend.cursors().getCursor(id.longValue());
            } catch (MongoServerException e) {
                return null;
            }
            String owner = cursorNamespaces.get(id.longValue());
            if (!(cursor instanceof ChangeStreamCursor stream)
                    || (owner != null && !owner.equals(database + "." + command.get("collection")))) {
                return null;
            }
            return stream;
        }

        /**
         * The library numbers cursors 1, 2, 3... from every start, so after a restart a client's
         * getMore with a cursor id from before it reached whichever new cursor now has that id
         * (another stream's), instead of failing with CursorNotFound as on MongoDB, whose ids are
         * random 64-bit numbers. Starting the counter at a random point (below 2^62, so it never
         * wraps) makes an id from before a restart unknown to the new process.
         */
        private static void startCursorIdsAtRandom(CursorRegistry registry) {
            try {
                java.lang.reflect.Field counter = CursorRegistry.class.getDeclaredField("cursorIdCounter");
                counter.setAccessible(true);
                long start = (new java.security.SecureRandom().nextLong() >>> 2) | (1L << 40);
                ((java.util.concurrent.atomic.AtomicLong) counter.get(registry)).set(start);
            } catch (ReflectiveOperationException e) {
                throw new IllegalStateException("cannot seed the cursor ids of " + registry, e);
            }
        }

        /**
         * The namespace of each open cursor ("db.collection"), from the reply that opened it. The
         * library's getMore serves any cursor id whatever collection it names; MongoDB refuses a
         * getMore on another namespace than the cursor's.
         */
        private final Map<Long, String> cursorNamespaces = new java.util.concurrent.ConcurrentHashMap<>();

        Document handleCommand(Channel channel, String database, String command, Document query) {
            return rememberCursor(handleCommandOf(channel, database, command, query));
        }

        private Document rememberCursor(Document reply) {
            if (reply != null && reply.get("cursor") instanceof Document cursor
                    && cursor.get("id") instanceof Number id && id.longValue() != 0
                    && cursor.get("ns") instanceof String ns) {
                cursorNamespaces.put(id.longValue(), ns);
            }
            return reply;
        }

        private Document handleCommandOf(Channel channel, String database, String command, Document query) {
            if (command.equals("configureFailPoint")) { // case-sensitive, as MongoDB's command lookup
                return failPoints.configure(database, query);
            }
            String name = command.toLowerCase(Locale.ROOT);
            if (name.equals("aggregate") && isChangeStream(query)) {
                return openChangeStream(database, query);
            }
            if (name.equals("listcollections")) {
                return listCollections(channel, database, command, query);
            }
            if (name.equals("hello") || name.equals("ismaster")) {
                return hello(channel, database, name, query);
            }
            if (name.equals("killcursors")) {
                Document reply = backend.baseHandleCommand(channel, database, command, query);
                // A getMore waiting on a killed cursor answers now (CursorNotFound), not at its timeout.
                if (query.get("cursors") instanceof List<?> ids) {
                    ids.stream().filter(Number.class::isInstance)
                            .forEach(id -> awaitData.release(((Number) id).longValue()));
                }
                return reply;
            }
            if (!WRITES.contains(name)) {
                return backend.baseHandleCommand(channel, database, command, query);
            }
            writeLock.lock();
            try {
                switch (name) {
                    case "insert":
                        return insert(channel, database, command, query);
                    case "update":
                        return update(channel, database, command, query);
                    case "delete":
                        return delete(channel, database, command, query);
                    case "create":
                        return create(channel, database, command, query);
                    case "collmod":
                        return collMod(database, command, query);
                    case "findandmodify":
                        return findAndModify(channel, database, command, query);
                    case "renamecollection":
                        return renameCollection(channel, database, command, query);
                    default:
                        return backend.baseHandleCommand(channel, database, command, query);
                }
            } finally {
                writeLock.unlock();
            }
        }

        /**
         * hello (MongoDB 4.4.2+; the library knows only isMaster) answers as isMaster with
         * isWritablePrimary in place of ismaster; an isMaster sent with helloOk says helloOk, so
         * drivers switch to hello as they do with MongoDB.
         */
        private Document hello(Channel channel, String database, String name, Document query) {
            Document reply = backend.baseHandleCommand(channel, database, "isMaster", query);
            if (name.equals("hello")) {
                Document renamed = new Document();
                reply.forEach((key, value) -> renamed.append(key.equals("ismaster") ? "isWritablePrimary" : key, value));
                return renamed;
            }
            if (Utils.isTrue(query.get("helloOk"))) {
                reply.append("helloOk", true);
            }
            return reply;
        }

        void dropDatabase(String database, Runnable base) {
            writeLock.lock();
            try {
                boolean existed = backend.hasDatabase(database);
                base.run(); // logs a drop for each collection through the oplog, as MongoDB does
                oplog.dropOptions(database); // also of system.* collections, which base.run() drops silently
                if (existed && !StackOplog.isInternalDatabase(database)) {
                    oplog.logDropDatabase(database);
                }
            } finally {
                writeLock.unlock();
            }
        }

        /**
         * Adds postBatchResumeToken to a getMore on one of our cursors, as MongoDB 4.0.7+ does. A
         * change stream whose getMore fails (e.g. a required post-image is missing) is closed, as
         * MongoDB kills a cursor whose getMore fails: its position has already moved past the event.
         */
        Document handleGetMore(String database, String command, Document query, Supplier<Document> base) {
            Cursor cursor = null;
            Object id = query.get(command);
            if (id instanceof Number number) {
                String owner = cursorNamespaces.get(number.longValue());
                String requested = database + "." + query.get("collection");
                if (owner != null && !owner.equals(requested)) {
                    // MongoDB's words and code (Unauthorized), from its getMore command.
                    throw new MongoServerError(13, "Unauthorized", "Requested getMore on namespace '"
                            + requested + "', but cursor belongs to a different namespace " + owner);
                }
            }
            if (id instanceof Number) {
                try {
                    cursor = backend.cursors().getCursor(((Number) id).longValue());
                } catch (MongoServerException e) {
                    // not found: the base call reports CursorNotFound, which drivers resume from
                }
            }
            Document response;
            try {
                response = base.get();
            } catch (RuntimeException e) {
                if (cursor instanceof ChangeStreamCursor) {
                    backend.cursors().remove(cursor);
                }
                throw e;
            }
            if (cursor instanceof ChangeStreamCursor) {
                Document cursorDocument = (Document) response.get("cursor");
                cursorDocument.put("postBatchResumeToken", ((ChangeStreamCursor) cursor).postBatchResumeToken());
            }
            if (id instanceof Number number && response.get("cursor") instanceof Document cursorDocument
                    && cursorDocument.get("id") instanceof Number next && next.longValue() == 0) {
                cursorNamespaces.remove(number.longValue()); // exhausted
            }
            return response;
        }

        /**
         * failGetMoreAfterCursorCheckout for a getMore, evaluated where MongoDB does: once the
         * cursor is found on the namespace the getMore names (else the getMore fails as usual:
         * CursorNotFound, Unauthorized). When it fires, the cursor is deleted (MongoDB deletes a
         * cursor whose getMore fails after checkout) and its error reply is returned; else null.
         */
        Document failGetMoreAfterCursorCheckout(String appName, String database, Document command) {
            if (!(command.get("getMore") instanceof Number id)) {
                return null;
            }
            Cursor cursor;
            try {
                cursor = backend.cursors().getCursor(id.longValue());
            } catch (MongoServerException e) {
                return null;
            }
            String requested = database + "." + command.get("collection");
            String owner = cursorNamespaces.get(id.longValue());
            if (owner != null && !owner.equals(requested)) {
                return null;
            }
            Document failed = failPoints.failGetMore(appName, owner != null ? owner : requested,
                    cursor instanceof ChangeStreamCursor, command);
            if (failed != null) {
                backend.cursors().remove(cursor);
                cursorNamespaces.remove(id.longValue());
            }
            return failed;
        }

        /**
         * The reply to a getMore starved by storefrontStarveChangeStream: an empty batch whose
         * postBatchResumeToken is the newest oplog entry's high-water mark, as if every change up
         * to now had been read, while the cursor keeps its position (its changes wait for the
         * fail point to end). null if the cursor is gone meanwhile.
         */
        Document starvedBatch(String database, Document command, ChangeStreamCursor stream) {
            try {
                if (backend.cursors().getCursor(stream.getId()) != stream) {
                    return null;
                }
            } catch (MongoServerException e) {
                return null;
            }
            Document cursor = new Document("nextBatch", new ArrayList<>())
                    .append("postBatchResumeToken", stream.newestHighWaterMark())
                    .append("id", stream.getId())
                    .append("ns", database + "." + command.get("collection"));
            Document reply = new Document("cursor", cursor);
            Utils.markOkay(reply);
            return reply;
        }

        static boolean isChangeStream(Document query) {
            Object pipeline = query.get("pipeline");
            if (!(pipeline instanceof List) || ((List<?>) pipeline).isEmpty()) {
                return false;
            }
            Object first = ((List<?>) pipeline).get(0);
            return first instanceof Document && ((Document) first).containsKey("$changeStream");
        }

        private Document openChangeStream(String database, Document query) {
            List<Document> pipeline = Aggregation.parse(query.get("pipeline"));
            Object specObject = pipeline.get(0).get("$changeStream");
            if (!(specObject instanceof Document)) {
                throw new MongoServerError(14, "TypeMismatch", "$changeStream stage expects a document");
            }
            Document spec = (Document) specObject;
            Object target = query.get("aggregate");
            boolean allChangesForCluster = Utils.isTrue(spec.get("allChangesForCluster"));
            Scope scope;
            String ns;
            if (database.equals("admin") && target instanceof Number) {
                if (!allChangesForCluster) {
                    throw new MongoServerError(73, "InvalidNamespace",
                            "$changeStream on the admin database requires allChangesForCluster: true");
                }
                scope = Scope.cluster();
                ns = "admin.$cmd.aggregate";
            } else if (allChangesForCluster) {
                throw new MongoServerError(ErrorCodes.INVALID_OPTIONS, "InvalidOptions",
                        "A $changeStream with 'allChangesForCluster:true' may only be opened on the 'admin' database");
            } else if (StackOplog.isInternalDatabase(database)) {
                throw new MongoServerError(73, "InvalidNamespace",
                        "$changeStream may not be opened on the internal " + database + " database");
            } else if (target instanceof Number) {
                scope = Scope.database(database);
                ns = database + ".$cmd.aggregate";
            } else {
                String collection = target.toString();
                if (collection.startsWith("system.")) {
                    throw new MongoServerError(73, "InvalidNamespace",
                            "cannot open a change stream on the system collection " + database + "." + collection);
                }
                scope = Scope.collection(database, collection);
                ns = database + "." + collection;
            }

            List<Document> stages = pipeline.subList(1, pipeline.size());
            for (Document stage : stages) {
                String stageName = stage.keySet().iterator().next();
                if (!ALLOWED_STAGES.contains(stageName)) {
                    throw new MongoServerError(ErrorCodes.ILLEGAL_OPERATION, "IllegalOperation",
                            stageName + " is not permitted in a $changeStream pipeline");
                }
            }
            Aggregation aggregation = null;
            if (!stages.isEmpty()) {
                MongoDatabase mongoDatabase = backend.resolveDatabase(scope.database == null ? "admin" : scope.database);
                MongoCollection<?> collection = scope.collection == null ? null
                        : mongoDatabase.resolveCollection(scope.collection, false);
                aggregation = Aggregation.fromPipeline(new ArrayList<>(stages), backend::resolveDatabase, mongoDatabase,
                        collection, oplog);
                aggregation.validate(query);
            }

            ChangeStreamCursor cursor = oplog.openCursor(backend.cursors().generateCursorId(), scope, spec, aggregation);
            int batchSize = 0;
            Object cursorOptions = query.get("cursor");
            if (cursorOptions instanceof Document && ((Document) cursorOptions).get("batchSize") instanceof Number) {
                batchSize = ((Number) ((Document) cursorOptions).get("batchSize")).intValue();
            }
            // MongoDB's first batch of an aggregate holds at most 101 documents by default.
            List<Document> firstBatch = cursor.takeDocuments(batchSize > 0 ? batchSize : 101);
            long cursorId = 0;
            if (!cursor.isEmpty()) {
                backend.cursors().add(cursor);
                cursorId = cursor.getId();
            }
            Document cursorDocument = new Document("firstBatch", firstBatch)
                    .append("postBatchResumeToken", cursor.postBatchResumeToken())
                    .append("id", cursorId)
                    .append("ns", ns);
            Document response = new Document("cursor", cursorDocument)
                    // Drivers keep this to resume with startAtOperationTime if the stream fails
                    // before it has a resume token (the Rust driver only when there is no PBRT).
                    .append("operationTime", oplog.operationTime());
            Utils.markOkay(response);
            return response;
        }

        /** Stages MongoDB allows after $changeStream (all of them work one event at a time). */
        private static final Set<String> ALLOWED_STAGES = Set.of("$match", "$project", "$addFields", "$set",
                "$unset", "$replaceRoot", "$replaceWith", "$redact");

        private Document insert(Channel channel, String database, String command, Document query) {
            WriteContext context = oplog.beginWrite();
            context.bufferInserts = true;
            Document response;
            try {
                response = backend.baseHandleCommand(channel, database, command, query);
            } finally {
                oplog.endWrite();
            }
            if (context.insertNs == null) {
                return response;
            }
            // The library logs every document of the command, including those rejected for a
            // duplicate key; keep only those it inserted. Its own rule (AbstractMongoCollection):
            // ordered stops at the first error, unordered skips just the failed ones. It treats a
            // missing "ordered" as false, so do we, to match what it did.
            boolean ordered = Utils.isTrue(query.get("ordered"));
            Set<Integer> failed = new HashSet<>();
            int firstFailure = Integer.MAX_VALUE;
            Object writeErrors = response.get("writeErrors");
            if (writeErrors instanceof List) {
                for (Object error : (List<?>) writeErrors) {
                    int index = ((Number) ((Document) error).get("index")).intValue();
                    failed.add(index);
                    firstFailure = Math.min(firstFailure, index);
                }
            }
            for (int i = 0; i < context.inserted.size(); i++) {
                if (failed.contains(i) || (ordered && i > firstFailure)) {
                    continue;
                }
                oplog.logInsert(context.insertNs, context.inserted.get(i));
            }
            return response;
        }

        private Document update(Channel channel, String database, String command, Document query) {
            Ns ns = new Ns(database, query.get(command).toString());
            WriteContext context = oplog.beginWrite();
            try {
                MongoCollection<?> collection = existingCollection(ns);
                Object updates = query.get("updates");
                boolean images = oplog.imagesEnabled(ns);
                if (collection != null && updates instanceof List) {
                    for (Object statement : (List<?>) updates) {
                        Document update = (Document) statement;
                        if (!(update.get("u") instanceof Document)
                                || (isReplacement((Document) update.get("u")) && !images)) {
                            // a replace event carries the whole document: a pre-image is needed
                            // only for fullDocumentBeforeChange
                            continue;
                        }
                        int limit = Utils.isTrue(update.get("multi")) ? 0 : 1;
                        Document selector = (Document) update.get("q");
                        // Wrapped in "query" so a filter field named "query" is not read as a wrapper.
                        for (Document document : collection.handleQuery(
                                new QueryParameters(new Document("query", selector), 0, limit))) {
                            context.rememberIfAbsent(ns, document.get("_id"), document.cloneDeeply());
                        }
                    }
                }
                return backend.baseHandleCommand(channel, database, command, query);
            } finally {
                oplog.endWrite();
                // A multi-update that fails part-way has changed some documents without calling
                // the oplog: log what changed, like MongoDB logs each document it updated.
                for (Map.Entry<Object, Document> image : context.images(ns).entrySet()) {
                    Document current = oplog.findById(ns, image.getKey());
                    if (current != null && !current.equals(image.getValue())) {
                        oplog.logUpdate(ns, image.getKey(), UpdateDescriptions.diff(image.getValue(), current),
                                image.getValue(), current);
                    }
                }
            }
        }

        private Document findAndModify(Channel channel, String database, String command, Document query) {
            Ns ns = new Ns(database, query.get(command).toString());
            boolean remove = Utils.isTrue(query.get("remove"));
            boolean upsert = Utils.isTrue(query.get("upsert"));
            Document selector = query.get("query") instanceof Document ? (Document) query.get("query") : new Document();
            Document before = null;
            MongoCollection<?> collection = existingCollection(ns);
            if (collection != null) {
                Document wrapped = new Document("query", selector);
                if (query.get("sort") instanceof Document) {
                    wrapped.put("orderby", query.get("sort"));
                }
                for (Document document : collection.handleQuery(new QueryParameters(wrapped, 0, 1))) {
                    before = document.cloneDeeply();
                }
            }

            Document effectiveQuery = query;
            boolean upserting = before == null && upsert && !remove;
            if (upserting) {
                // The library reports no upserted id here; ask for the new document to learn it.
                effectiveQuery = query.clone();
                effectiveQuery.put("new", Boolean.TRUE);
                effectiveQuery.remove("fields");
            }
            Document response = backend.baseHandleCommand(channel, database, command, effectiveQuery);

            if (before != null) {
                Object id = before.get("_id");
                Document after = oplog.findById(ns, id);
                if (remove) {
                    if (after == null) {
                        oplog.logDelete(ns, id, before);
                    }
                } else if (after != null && !after.equals(before)) {
                    Document update = (Document) query.get("update");
                    if (update != null && isReplacement(update)) {
                        oplog.logReplace(ns, after, before);
                    } else {
                        oplog.logUpdate(ns, id, UpdateDescriptions.describe(update, before, after), before, after);
                    }
                }
            } else if (upserting && response.get("value") instanceof Document) {
                Document inserted = oplog.findById(ns, ((Document) response.get("value")).get("_id"));
                if (inserted != null) {
                    oplog.logInsert(ns, inserted);
                }
                response.put("value", Utils.isTrue(query.get("new"))
                        ? project(channel, ns, inserted, query.get("fields")) : null);
            }
            return response;
        }

        /** The client's `fields` projection, applied by the server's own find. */
        private Document project(Channel channel, Ns ns, Document document, Object fields) {
            if (document == null || !(fields instanceof Document) || ((Document) fields).isEmpty()) {
                return document;
            }
            Document find = new Document("find", ns.collection)
                    .append("filter", new Document("_id", document.get("_id")))
                    .append("projection", fields)
                    .append("limit", 1);
            Document result = backend.baseHandleCommand(channel, ns.database, "find", find);
            List<?> batch = (List<?>) ((Document) result.get("cursor")).get("firstBatch");
            return batch.isEmpty() ? null : (Document) batch.get(0);
        }

        private Document renameCollection(Channel channel, String database, String command, Document query) {
            Document response = backend.baseHandleCommand(channel, database, command, query);
            String from = String.valueOf(query.get(command));
            String to = String.valueOf(query.get("to"));
            if (!from.equals(to) && Utils.isTrue(response.get("ok"))) {
                // MongoDB keeps a collection's options when it is renamed (the target's, if
                // dropTarget dropped it, are gone with it)
                oplog.moveOptions(Ns.parse(from), Ns.parse(to));
                oplog.logRename(Ns.parse(from), Ns.parse(to));
            }
            return response;
        }

        /**
         * delete: with changeStreamPreAndPostImages on the collection, the pre-images of the
         * documents it removes (for fullDocumentBeforeChange), taken just before the command.
         */
        private Document delete(Channel channel, String database, String command, Document query) {
            Ns ns = new Ns(database, query.get(command).toString());
            WriteContext context = oplog.beginWrite();
            try {
                MongoCollection<?> collection = existingCollection(ns);
                Object deletes = query.get("deletes");
                if (collection != null && deletes instanceof List && oplog.imagesEnabled(ns)) {
                    List<?> statements = (List<?>) deletes;
                    for (Object statement : statements) {
                        Document delete = (Document) statement;
                        if (!(delete.get("q") instanceof Document)) {
                            continue;
                        }
                        // The library deletes what handleQuery(q, 0, limit) returns; with several
                        // statements an earlier one may remove that, so then take every match.
                        int limit = statements.size() == 1 && delete.get("limit") instanceof Number
                                ? ((Number) delete.get("limit")).intValue() : 0;
                        for (Document document : collection.handleQuery(
                                new QueryParameters(new Document("query", delete.get("q")), 0, limit))) {
                            context.rememberIfAbsent(ns, document.get("_id"), document.cloneDeeply());
                        }
                    }
                }
                return backend.baseHandleCommand(channel, database, command, query);
            } finally {
                oplog.endWrite();
            }
        }

        /**
         * create: the library ignores changeStreamPreAndPostImages (CollectionOptions.fromQuery
         * reads only autoIndexId, capped and size); it is validated first, recorded once the
         * collection exists.
         */
        private Document create(Channel channel, String database, String command, Document query) {
            Boolean images = ImagesOption.parse(command, query.get(ImagesOption.FIELD));
            ImagesOption.checkPermitted(database, images);
            Document response = backend.baseHandleCommand(channel, database, command, query);
            if (Boolean.TRUE.equals(images) && Utils.isTrue(response.get("ok"))) {
                oplog.setImagesEnabled(new Ns(database, query.get(command).toString()), true);
            }
            return response;
        }

        /**
         * collMod, which the library lacks (CommandNotFound). Only changeStreamPreAndPostImages is
         * supported; other options (validator, index, expireAfterSeconds, ...) are refused rather
         * than silently ignored. MongoDB (coll_mod.cpp): a missing collection is NamespaceNotFound
         * (26), "ns does not exist", after the options were parsed.
         */
        private Document collMod(String database, String command, Document query) {
            Ns ns = new Ns(database, String.valueOf(query.get(command)));
            Boolean images = null;
            for (String key : query.keySet()) {
                if (key.equals(command) || isGenericArgument(key)) {
                    continue;
                }
                if (!key.equals(ImagesOption.FIELD)) {
                    throw new MongoServerError(ErrorCodes.INVALID_OPTIONS, "InvalidOptions",
                            "the test server's collMod supports only " + ImagesOption.FIELD + ", not '" + key + "'");
                }
                images = ImagesOption.parse(command, query.get(key));
            }
            ImagesOption.checkPermitted(database, images);
            if (existingCollection(ns) == null) {
                throw new MongoServerError(ErrorCodes.NAMESPACE_NOT_FOUND, "NamespaceNotFound", "ns does not exist");
            }
            if (images != null) {
                oplog.setImagesEnabled(ns, images);
            }
            Document response = new Document();
            Utils.markOkay(response);
            return response;
        }

        /** Fields every command may carry (MongoDB's generic command arguments). */
        private static boolean isGenericArgument(String key) {
            return key.startsWith("$") || GENERIC_ARGUMENTS.contains(key);
        }

        private static final Set<String> GENERIC_ARGUMENTS = Set.of("lsid", "txnNumber", "autocommit",
                "startTransaction", "writeConcern", "readConcern", "comment", "maxTimeMS", "apiVersion", "apiStrict",
                "apiDeprecationErrors");

        /**
         * listCollections: the library reports empty options; add changeStreamPreAndPostImages
         * where it is enabled, as MongoDB does ({enabled: true}; a disabled one is not listed).
         */
        private Document listCollections(Channel channel, String database, String command, Document query) {
            Document response = backend.baseHandleCommand(channel, database, command, query);
            Object cursor = response.get("cursor");
            Object batch = cursor instanceof Document ? ((Document) cursor).get("firstBatch") : null;
            if (batch instanceof List) {
                for (Object item : (List<?>) batch) {
                    if (!(item instanceof Document) || !(((Document) item).get("name") instanceof String)) {
                        continue;
                    }
                    Document description = (Document) item;
                    if (oplog.imagesEnabled(new Ns(database, (String) description.get("name")))) {
                        Document options = description.get("options") instanceof Document
                                ? (Document) description.get("options") : new Document();
                        options.put(ImagesOption.FIELD, new Document("enabled", true));
                        description.put("options", options);
                    }
                }
            }
            return response;
        }

        private MongoCollection<?> existingCollection(Ns ns) {
            if (!backend.hasDatabase(ns.database)) {
                return null;
            }
            return backend.resolveDatabase(ns.database).resolveCollection(ns.collection, false);
        }
    }

    /** MongoDB error codes used here that the library has no constants for. */
    /**
     * getMores of change streams waiting for a change (MongoDB's awaitData): each waits until a
     * write in its stream's scope, a killCursors of its cursor, or its maxTimeMS. Nothing blocks:
     * a waiter is a callback that hands the held-back getMore to its connection's event loop.
     */
    static final class AwaitData {
        /** MongoDB's wait for a change stream's getMore that sends no maxTimeMS. */
        static final long DEFAULT_AWAIT_MILLIS = 1000;

        /** How long `getMore` waits at most: its maxTimeMS, or MongoDB's default. */
        static long millis(Document getMore) {
            return getMore.get("maxTimeMS") instanceof Number max && max.longValue() > 0
                    ? max.longValue() : DEFAULT_AWAIT_MILLIS;
        }

        private record Waiter(ChangeStreamCursor cursor, Runnable wake) {
        }

        private final Map<Long, Waiter> waiters = new ConcurrentHashMap<>();

        /**
         * Registers `wake` for the next write in `cursor`'s scope. False, and nothing registered,
         * when the cursor has something to return already: checked after registering, so a write
         * between the caller's check and the registration is never missed.
         */
        boolean await(ChangeStreamCursor cursor, Runnable wake) {
            Waiter waiter = new Waiter(cursor, wake);
            waiters.put(cursor.getId(), waiter);
            if (cursor.hasPending()) {
                waiters.remove(cursor.getId(), waiter);
                return false;
            }
            return true;
        }

        /** Forgets the waiter of `cursorId` without waking it. */
        void cancel(long cursorId) {
            waiters.remove(cursorId);
        }

        /** Wakes the waiter of `cursorId`, if any (its cursor was killed). */
        void release(long cursorId) {
            Waiter waiter = waiters.remove(cursorId);
            if (waiter != null) {
                waiter.wake.run();
            }
        }

        /** An oplog entry became readable: wakes the waiters whose stream it concerns. */
        void written(Document entry) {
            if (waiters.isEmpty()) {
                return;
            }
            waiters.forEach((id, waiter) -> {
                if (waiter.cursor.scope().classify(entry) != Scope.Kind.SKIP && waiters.remove(id, waiter)) {
                    waiter.wake.run();
                }
            });
        }
    }

    // ---------------------------------------------------------------------------------------
    // Fail points: MongoDB's configureFailPoint (a mongod started with
    // --setParameter enableTestCommands=1), for the fault tests.
    // ---------------------------------------------------------------------------------------

    /**
     * One fail point, as MongoDB's FailPoint (src/mongo/util/fail_point.cpp): a mode ("off",
     * "alwaysOn", {times: n}: fires n times then turns itself off, {skip: n}: lets n evaluations
     * pass then fires every time, {activationProbability: p}), its data, and how many times it
     * fired since the server started (configureFailPoint answers that count as it was before).
     * Only evaluations whose predicate accepts the data count towards times, skip and the count.
     */
    static final class FailPoint {
        enum Mode { OFF, ALWAYS_ON, TIMES, SKIP, RANDOM }

        private static final java.util.Random RANDOM = new java.security.SecureRandom();

        private Mode mode = Mode.OFF;
        private long value;
        private Document data = new Document();
        private long hits;

        /**
         * Sets mode and data from a configureFailPoint command, checked as FailPoint::parseBSON
         * checks them (same codes and words); the hit count before this call.
         */
        synchronized long configure(Document command) {
            Object modeValue = command.get("mode");
            Mode newMode;
            long newValue = 0;
            if (modeValue == null) {
                throw new MongoServerError(ErrorCodes.ILLEGAL_OPERATION, "IllegalOperation",
                        "When setting a failpoint, you must supply a 'mode'");
            } else if (modeValue instanceof String name) {
                if (name.equals("off")) {
                    newMode = Mode.OFF;
                } else if (name.equals("alwaysOn")) {
                    newMode = Mode.ALWAYS_ON;
                } else {
                    throw new MongoServerError(ErrorCodes.BAD_VALUE, "BadValue", "unknown mode: " + name);
                }
            } else if (modeValue instanceof Document spec) {
                if (spec.containsKey("times")) {
                    newMode = Mode.TIMES;
                    newValue = count(spec, "times");
                } else if (spec.containsKey("skip")) {
                    newMode = Mode.SKIP;
                    newValue = count(spec, "skip");
                } else if (spec.containsKey("activationProbability")) {
                    newMode = Mode.RANDOM;
                    if (!(spec.get("activationProbability") instanceof Number p)) {
                        throw new MongoServerError(ErrorCodes.TYPE_MISMATCH, "TypeMismatch",
                                "the 'activationProbability' option to 'mode' must be a double between 0 and 1");
                    }
                    double probability = p.doubleValue();
                    if (probability < 0 || probability > 1) {
                        throw new MongoServerError(ErrorCodes.BAD_VALUE, "BadValue",
                                "activationProbability must be between 0.0 and 1.0; found " + probability);
                    }
                    newValue = (long) (Integer.MAX_VALUE * probability);
                } else {
                    throw new MongoServerError(ErrorCodes.BAD_VALUE, "BadValue",
                            "'mode' must be one of 'off', 'alwaysOn', '{times:n}', '{skip:n}' or '{activationProbability:p}'");
                }
            } else {
                throw new MongoServerError(ErrorCodes.TYPE_MISMATCH, "TypeMismatch", "'mode' must be a string or JSON object");
            }
            Object newData = command.get("data");
            if (newData != null && !(newData instanceof Document)) {
                throw new MongoServerError(ErrorCodes.TYPE_MISMATCH, "TypeMismatch", "the 'data' option must be a JSON object");
            }
            long before = hits;
            mode = newMode;
            value = newValue;
            data = newData == null ? new Document() : ((Document) newData).cloneDeeply();
            return before;
        }

        private static long count(Document spec, String field) {
            if (!(spec.get(field) instanceof Number number)) {
                throw new MongoServerError(ErrorCodes.TYPE_MISMATCH, "TypeMismatch",
                        "'" + field + "' option to 'mode' must be a number");
            }
            if (number.doubleValue() != Math.rint(number.doubleValue())) {
                throw new MongoServerError(ErrorCodes.BAD_VALUE, "BadValue",
                        "'" + field + "' option to 'mode' must be an integer");
            }
            long n = number.longValue();
            if (n < 0) {
                throw new MongoServerError(ErrorCodes.BAD_VALUE, "BadValue", "'" + field + "' option to 'mode' must be positive");
            }
            if (n > Integer.MAX_VALUE) {
                throw new MongoServerError(ErrorCodes.BAD_VALUE, "BadValue", "'" + field + "' option to 'mode' is too large");
            }
            return n;
        }

        /** The data if the fail point fires for a request whose predicate accepts it, else null. */
        synchronized Document evaluate(java.util.function.Predicate<Document> predicate) {
            if (mode == Mode.OFF || !predicate.test(data)) {
                return null;
            }
            boolean hit = switch (mode) {
                case ALWAYS_ON -> true;
                case RANDOM -> RANDOM.nextInt(Integer.MAX_VALUE) < value;
                case TIMES -> {
                    // MongoDB's nTimes: fires, and turns off once the count reaches 0 (so {times: 0} fires once)
                    if (--value <= 0) {
                        mode = Mode.OFF;
                    }
                    yield true;
                }
                case SKIP -> value <= 0 || --value < 0;
                default -> false;
            };
            if (!hit) {
                return null;
            }
            hits++;
            return data;
        }
    }

    /**
     * The fail points configureFailPoint knows: MongoDB's failCommand and
     * failGetMoreAfterCursorCheckout, and storefrontStarveChangeStream, which is ours (not
     * MongoDB's). State is in memory: a restart turns them all off, as on MongoDB.
     *
     * failCommand follows CommandHelpers::shouldActivateFailCommandFailPoint and
     * evaluateFailCommandFailPoint (src/mongo/db/commands.cpp, 6.0/7.0), evaluated when a command
     * starts (before a getMore checks out its cursor or waits): never configureFailPoint itself;
     * only clients whose handshake appName equals data.appName, commands whose namespace equals
     * data.namespace, commands named in data.failCommands (by name or alias, case-sensitive) or
     * any with data.failAllCommands; blockConnection + blockTimeMS delay the command, then
     * closeConnection closes the connection without a reply, errorCode fails it ("Failing command
     * via 'failCommand' failpoint"), else it runs; writeConcernError alone is added to the reply of
     * a write command after it ran. errorLabels, when an array, replace the labels the server
     * would add (an empty array: none).
     */
    static final class FailPoints {
        static final String FAIL_COMMAND = "failCommand";
        static final String FAIL_GET_MORE = "failGetMoreAfterCursorCheckout";
        static final String STARVE = "storefrontStarveChangeStream";
        static final String FAIL_COMMAND_MESSAGE = "Failing command via 'failCommand' failpoint";

        /** Commands that take a write concern (Command::supportsWriteConcern), by canonical name. */
        private static final Set<String> WRITE_CONCERN_COMMANDS = Set.of("insert", "update", "delete",
                "findAndModify", "create", "drop", "dropDatabase", "renameCollection", "createIndexes", "dropIndexes",
                "collMod");

        /** Command aliases (Command::hasAlias); other names match only themselves. */
        private static final Map<String, String> ALIASES = Map.of("findandmodify", "findAndModify",
                "ismaster", "isMaster", "buildinfo", "buildInfo", "dbstats", "dbStats", "collstats", "collStats");

        private final FailPoint failCommand = new FailPoint();
        private final FailPoint failGetMore = new FailPoint();
        private final FailPoint starve = new FailPoint();

        /** The version the server reports: one code's name and category changed in 6.1. */
        volatile ReportedVersion version = ReportedVersion.MONGO_6_0;

        /** What failCommand does to a command: block, then close or answer `error`, or run it. */
        record Action(long blockMillis, boolean closeConnection, Document error) {
        }

        /** configureFailPoint (admin only): {count: <times fired before>, ok: 1}. */
        Document configure(String database, Document command) {
            if (!database.equals("admin")) {
                throw new MongoServerError(13, "Unauthorized",
                        "configureFailPoint may only be run against the admin database.");
            }
            Object name = command.get("configureFailPoint");
            FailPoint failPoint = FAIL_COMMAND.equals(name) ? failCommand
                    : FAIL_GET_MORE.equals(name) ? failGetMore
                    : STARVE.equals(name) ? starve : null;
            if (failPoint == null) {
                throw new MongoServerError(266, "FailPointSetFailed", (name instanceof String s ? s : "") + " not found");
            }
            long count = failPoint.configure(command);
            Document reply = new Document("count", count <= Integer.MAX_VALUE ? (Object) (int) count : (Object) count);
            Utils.markOkay(reply);
            return reply;
        }

        /** failCommand for a command that starts now; null when it does not fire (the command runs). */
        Action failCommand(String appName, StackWireHandler.Request request) {
            String command = request.name();
            if (command.equals("configureFailPoint")) {
                return null; // never failed, even when listed
            }
            String ns = namespaceOf(request);
            Document data = failCommand.evaluate(d -> activates(d, appName, ns, command, d.get("failCommands"))
                    && (isTrue(d, "closeConnection") || isTrue(d, "blockConnection") || errorCode(d) != null));
            if (data == null) {
                return null;
            }
            long blockMillis = 0;
            if (isTrue(data, "blockConnection")) {
                Object time = data.get("blockTimeMS");
                if (!(time instanceof Number number) || number.doubleValue() != Math.rint(number.doubleValue())) {
                    return new Action(0, false, error(ErrorCodes.INVALID_OPTIONS,
                            "must specify 'blockTimeMS' when 'blockConnection' is true", data, command, request.body(),
                            false));
                }
                if (number.longValue() < 0) {
                    return new Action(0, false, error(ErrorCodes.INVALID_OPTIONS, "'blockTimeMS' must be non-negative",
                            data, command, request.body(), false));
                }
                blockMillis = number.longValue();
            }
            if (isTrue(data, "closeConnection")) {
                return new Action(blockMillis, true, null);
            }
            Integer code = errorCode(data);
            if (code == null) {
                return new Action(blockMillis, false, null);
            }
            boolean changeStream = command.equals("aggregate") && StackCore.isChangeStream(request.body());
            return new Action(blockMillis, false,
                    error(code, FAIL_COMMAND_MESSAGE, data, command, request.body(), changeStream));
        }

        /**
         * failCommand's writeConcernError for a write command that runs now: the fields to add to
         * its reply (writeConcernError, errorLabels), or null.
         */
        Document writeConcernError(String appName, StackWireHandler.Request request) {
            String command = canonical(request.name());
            if (!WRITE_CONCERN_COMMANDS.contains(command)) {
                return null;
            }
            String ns = namespaceOf(request);
            Document data = failCommand.evaluate(d -> activates(d, appName, ns, command, d.get("failCommands"))
                    && d.containsKey("writeConcernError"));
            if (data == null) {
                return null;
            }
            Document added = new Document("writeConcernError", data.get("writeConcernError"));
            List<String> labels;
            if (data.get("errorLabels") instanceof List<?> given) {
                labels = given.stream().map(String::valueOf).toList();
            } else {
                Object wceCode = data.get("writeConcernError") instanceof Document wce ? wce.get("code") : null;
                labels = wceCode instanceof Number n && isRetryableWrite(request.body())
                        && ServerErrors.isRetriable(n.intValue()) ? List.of("RetryableWriteError") : List.of();
            }
            if (!labels.isEmpty()) {
                added.append("errorLabels", labels);
            }
            return added;
        }

        /**
         * failGetMoreAfterCursorCheckout for a getMore whose cursor (namespace `cursorNs`) was
         * found: its error reply, or null. MongoDB raises it after checking the cursor out, so the
         * server knows a change stream's getMore and labels the error as its own (unlike
         * failCommand's, which fires before: SERVER-46091), and the cursor is deleted.
         */
        Document failGetMore(String appName, String cursorNs, boolean changeStream, Document body) {
            Document data = failGetMore.evaluate(d -> activates(d, appName, cursorNs, "getMore", List.of("getMore")));
            if (data == null) {
                return null;
            }
            int code = data.get("errorCode") instanceof Number n ? n.intValue() : 1; // InternalError
            return error(code, "Hit the 'failGetMoreAfterCursorCheckout' failpoint", null, "getMore", body, changeStream);
        }

        /**
         * storefrontStarveChangeStream (ours, not MongoDB's): whether a getMore on a change stream
         * watching `scope` is starved now (data.namespace names its collection, "db.coll", or
         * database, "db"; data.appName, if given, its client).
         */
        boolean starves(String appName, Scope scope) {
            return starve.evaluate(d -> {
                if (d.containsKey("appName") && !Objects.equals(d.get("appName"), appName)) {
                    return false;
                }
                Object ns = d.get("namespace");
                return scope.database != null && ns instanceof String s
                        && (scope.collection == null ? s.equals(scope.database)
                        : s.equals(scope.database + "." + scope.collection));
            }) != null;
        }

        /** shouldActivateFailCommandFailPoint, with `failCommands` as the commands listed. */
        private static boolean activates(Document data, String appName, String ns, String command, Object failCommands) {
            if (data.containsKey("threadName")) {
                return false; // MongoDB's thread names ("conn12") do not exist here
            }
            if (data.containsKey("appName")
                    && !Objects.equals(data.get("appName") instanceof String s ? s : "", appName == null ? "" : appName)) {
                return false;
            }
            if (data.containsKey("namespace") && !Objects.equals(data.get("namespace"), ns)) {
                return false;
            }
            if (data.containsKey("failAllCommands")) {
                return true;
            }
            if (failCommands instanceof List<?> names) {
                for (Object name : names) {
                    if (name instanceof String s && canonical(s).equals(canonical(command))) {
                        return true;
                    }
                }
            }
            return false;
        }

        private static String canonical(String name) {
            return ALIASES.getOrDefault(name, name);
        }

        /** The namespace MongoDB's command invocation reports (ns()), which data.namespace names. */
        static String namespaceOf(StackWireHandler.Request request) {
            Object target = request.body().get(request.name());
            if (request.name().equals("getMore")) {
                target = request.body().get("collection");
            }
            if (target instanceof String collection && !collection.isEmpty()) {
                return request.database() + "." + collection;
            }
            if (request.name().equals("aggregate")) {
                return request.database() + ".$cmd.aggregate";
            }
            return request.database();
        }

        private static boolean isTrue(Document data, String field) {
            return data.get(field) instanceof Boolean b && b; // bsonExtractBooleanField: a boolean only
        }

        /** data.errorCode when it is an integral number (bsonExtractIntegerField), else null. */
        private static Integer errorCode(Document data) {
            return data.get("errorCode") instanceof Number n && n.doubleValue() == Math.rint(n.doubleValue())
                    ? n.intValue() : null;
        }

        /** A retryable write: a txnNumber outside a transaction (no autocommit). */
        private static boolean isRetryableWrite(Document body) {
            return body.containsKey("txnNumber") && !body.containsKey("autocommit");
        }

        /**
         * An error reply as MongoDB shapes it: {ok: 0, errmsg, code, codeName, errorLabels?}.
         * A code whose error must carry extra info (StaleConfig, DuplicateKey...) without
         * data.errorExtraInfo becomes 40671, as a release build of MongoDB replaces it. Labels:
         * data.errorLabels when it is an array, else the server's own (ErrorLabelBuilder, 6.0/7.0):
         * RetryableWriteError for a retryable write failing with a retriable code;
         * ResumableChangeStreamError for an aggregate or getMore the server knows is a change
         * stream's, failing with a retriable, network or retargeting code, RetryChangeStream or
         * FailedToSatisfyReadPreference; NonResumableChangeStreamError for ChangeStreamFatalError
         * and ChangeStreamHistoryLost.
         */
        private Document error(int code, String message, Document data, String command, Document body,
                               boolean changeStream) {
            Object extra = data == null ? null : data.get("errorExtraInfo");
            int effective = code;
            String errmsg = message;
            if (ServerErrors.REQUIRES_EXTRA_INFO.contains(code) && !(extra instanceof Document)) {
                effective = 40671;
                errmsg = "Missing required extra info for error code " + code;
            }
            Document reply = new Document("ok", 0.0)
                    .append("errmsg", errmsg)
                    .append("code", effective)
                    .append("codeName", ServerErrors.codeName(effective, version));
            if (extra instanceof Document info && ServerErrors.HAS_EXTRA_INFO.contains(effective)) {
                info.forEach(reply::putIfAbsent);
            }
            List<String> labels;
            if (data != null && data.get("errorLabels") instanceof List<?> given) {
                labels = given.stream().map(String::valueOf).toList();
            } else if (isRetryableWrite(body) && ServerErrors.isRetriable(effective)) {
                labels = List.of("RetryableWriteError");
            } else if ((command.equals("aggregate") || command.equals("getMore")) && changeStream
                    && ServerErrors.isResumableChangeStreamError(effective, version)) {
                labels = List.of("ResumableChangeStreamError");
            } else if (effective == ErrorCodes.CHANGE_STREAM_FATAL || effective == ErrorCodes.CHANGE_STREAM_HISTORY_LOST) {
                labels = List.of("NonResumableChangeStreamError");
            } else {
                labels = List.of();
            }
            if (!labels.isEmpty()) {
                reply.append("errorLabels", labels);
            }
            return reply;
        }
    }

    /** MongoDB's names and categories of the error codes fault tests use (error_codes.yml, 6.0/7.0). */
    static final class ServerErrors {
        private static final Map<Integer, String> NAMES = Map.ofEntries(
                Map.entry(1, "InternalError"), Map.entry(2, "BadValue"), Map.entry(6, "HostUnreachable"),
                Map.entry(7, "HostNotFound"), Map.entry(8, "UnknownError"), Map.entry(11, "UserNotFound"),
                Map.entry(13, "Unauthorized"), Map.entry(14, "TypeMismatch"), Map.entry(20, "IllegalOperation"),
                Map.entry(24, "LockTimeout"), Map.entry(26, "NamespaceNotFound"), Map.entry(43, "CursorNotFound"),
                Map.entry(50, "MaxTimeMSExpired"), Map.entry(59, "CommandNotFound"),
                Map.entry(64, "WriteConcernFailed"), Map.entry(72, "InvalidOptions"),
                Map.entry(89, "NetworkTimeout"), Map.entry(91, "ShutdownInProgress"), Map.entry(100, "UnsatisfiableWriteConcern"),
                Map.entry(112, "WriteConflict"), Map.entry(133, "FailedToSatisfyReadPreference"),
                Map.entry(134, "ReadConcernMajorityNotAvailableYet"), Map.entry(136, "CappedPositionLost"),
                Map.entry(150, "StaleEpoch"), Map.entry(189, "PrimarySteppedDown"), Map.entry(234, "RetryChangeStream"),
                Map.entry(237, "CursorKilled"), Map.entry(251, "NoSuchTransaction"), Map.entry(260, "InvalidResumeToken"),
                Map.entry(262, "ExceededTimeLimit"), Map.entry(266, "FailPointSetFailed"),
                Map.entry(280, "ChangeStreamFatalError"), Map.entry(286, "ChangeStreamHistoryLost"),
                Map.entry(9001, "SocketException"), Map.entry(10107, "NotWritablePrimary"),
                Map.entry(11000, "DuplicateKey"), Map.entry(11600, "InterruptedAtShutdown"),
                Map.entry(11601, "Interrupted"), Map.entry(11602, "InterruptedDueToReplStateChange"),
                Map.entry(13388, "StaleConfig"), Map.entry(13435, "NotPrimaryNoSecondaryOk"),
                Map.entry(13436, "NotPrimaryOrSecondary"), Map.entry(50915, "BackupCursorOpenConflictWithCheckpoint"));

        /** The RetriableError category. */
        private static final Set<Integer> RETRIABLE = Set.of(6, 7, 89, 91, 134, 189, 262, 9001, 10107, 11600, 11602,
                13435, 13436, 50915);
        /** The NetworkError category. */
        private static final Set<Integer> NETWORK = Set.of(6, 7, 89, 9001);

        /** Codes whose errors must carry extra info (no extraIsOptional). */
        static final Set<Integer> REQUIRES_EXTRA_INFO = Set.of(65, 121, 169, 227, 249, 283, 11000, 13388);
        /** Codes whose errors may carry extra info (errorExtraInfo's fields are added to the reply). */
        static final Set<Integer> HAS_EXTRA_INFO = Set.of(65, 91, 121, 143, 169, 227, 249, 283, 11000, 13388);

        /**
         * MongoDB's codeName; "Location<code>" for a code it has no name for (as
         * ErrorCodes::errorString), and for any code missing from this table. 63 was
         * StaleShardVersion until 6.0 and is OBSOLETE_StaleShardVersion from 6.1.
         */
        static String codeName(int code, ReportedVersion version) {
            if (code == 63) {
                return version == ReportedVersion.MONGO_6_0 ? "StaleShardVersion" : "OBSOLETE_StaleShardVersion";
            }
            return NAMES.getOrDefault(code, "Location" + code);
        }

        static boolean isRetriable(int code) {
            return RETRIABLE.contains(code);
        }

        /** The codes ErrorLabelBuilder::isResumableChangeStreamError accepts. */
        static boolean isResumableChangeStreamError(int code, ReportedVersion version) {
            boolean retargeting = code == 150 || code == 13388 || (code == 63 && version == ReportedVersion.MONGO_6_0);
            return RETRIABLE.contains(code) || NETWORK.contains(code) || retargeting || code == 234 || code == 133;
        }
    }

    /**
     * Per connection, between the wire decoder and the library's command handler:
     * - applies the fail points (FailPoints) to each request before it runs, as MongoDB
     *   evaluates failCommand when a command starts: blocks it (blockConnection, without blocking
     *   the event loop), closes the connection, or answers the error itself; remembers the
     *   client's handshake appName, which fail points can be scoped to;
     * - holds back a change stream's getMore that has nothing to return (AwaitData), and the
     *   commands behind it on the same connection, so the connection's reply order stays the
     *   request order while its event loop serves other connections;
     * - puts operationTime and $clusterTime on every OP_MSG reply, as a replica-set member does,
     *   and takes $clusterTime off incoming commands (the library does not know it);
     * - answers hello/isMaster as a replica set's primary when the server runs with a set name.
     */
    static final class StackWireHandler extends ChannelDuplexHandler {
        private static final java.util.concurrent.atomic.AtomicInteger REPLY_IDS =
                new java.util.concurrent.atomic.AtomicInteger();

        private final StackCore core;
        private final ReplicaSet replicaSet;
        private final ArrayDeque<Object> behind = new ArrayDeque<>();
        /** The request held back (awaitData, blockConnection, a starved getMore), or null. */
        private Object held;
        /** What serves the held request once it is released. */
        private Runnable serveHeld;
        /** The cursor the held request waits on with AwaitData, or 0. */
        private long heldCursor;
        private ScheduledFuture<?> heldTimeout;
        /** Tells a late wake-up of an earlier hold from the current one. */
        private long holdGeneration;
        /** The command name of the request being served (no pipelining within a connection). */
        private String serving = "";
        /** The appName of the connection's handshake, as MongoDB's ClientMetadata keeps it. */
        private String appName;
        private boolean handshakeSeen;
        /** Fields a fail point adds to the reply of the request being served (writeConcernError). */
        private Document addToReply;

        StackWireHandler(StackCore core, ReplicaSet replicaSet) {
            this.core = core;
            this.replicaSet = replicaSet;
        }

        /** A command request: its database, its name as sent and its body. */
        record Request(String database, String name, Document body) {
            /** null for anything that is not a command (a legacy OP_QUERY on a collection). */
            static Request of(Object msg) {
                if (msg instanceof MongoMessage message) {
                    Document command = message.getDocument();
                    command.remove("$clusterTime");
                    return command.isEmpty() ? null
                            : new Request(message.getDatabaseName(), command.keySet().iterator().next(), command);
                }
                if (msg instanceof MongoQuery query && query.getCollectionName().equals("$cmd")
                        && query.getQuery() != null && !query.getQuery().isEmpty()) {
                    Document command = query.getQuery();
                    if (command.get("$query") instanceof Document wrapped && !wrapped.isEmpty()) {
                        command = wrapped;
                    }
                    return new Request(query.getDatabaseName(), command.keySet().iterator().next(), command);
                }
                return null;
            }
        }

        @Override
        public void channelRead(ChannelHandlerContext ctx, Object msg) {
            if (held != null) {
                behind.add(msg);
                return;
            }
            dispatch(ctx, msg);
        }

        private void dispatch(ChannelHandlerContext ctx, Object msg) {
            Request request = Request.of(msg);
            if (request == null) {
                serving = "";
                ctx.fireChannelRead(msg);
                return;
            }
            serving = request.name().toLowerCase(Locale.ROOT);
            rememberHandshake(request);
            FailPoints.Action action = core.failPoints.failCommand(appName, request);
            if (action == null) {
                serve(ctx, msg, request);
            } else if (action.blockMillis() > 0) {
                hold(ctx, msg, 0, action.blockMillis(), () -> afterFailCommand(ctx, msg, request, action));
            } else {
                afterFailCommand(ctx, msg, request, action);
            }
        }

        /** MongoDB keeps the client metadata of a connection's first hello that carries it. */
        private void rememberHandshake(Request request) {
            if (handshakeSeen || !(serving.equals("hello") || serving.equals("ismaster"))
                    || !(request.body().get("client") instanceof Document client)) {
                return;
            }
            handshakeSeen = true;
            if (client.get("application") instanceof Document application
                    && application.get("name") instanceof String name) {
                appName = name;
            }
        }

        /** After a failCommand's block: close the connection, answer its error, or run the command. */
        private void afterFailCommand(ChannelHandlerContext ctx, Object msg, Request request,
                                      FailPoints.Action action) {
            if (action.closeConnection()) {
                behind.clear();
                ctx.close(); // no reply, as MongoDB ends the session
            } else if (action.error() != null) {
                reply(ctx, msg, action.error());
            } else {
                serve(ctx, msg, request);
            }
        }

        private void serve(ChannelHandlerContext ctx, Object msg, Request request) {
            if (request.name().equals("getMore") && msg instanceof MongoMessage) {
                Document failed = core.failGetMoreAfterCursorCheckout(appName, request.database(), request.body());
                if (failed != null) {
                    reply(ctx, msg, failed);
                    return;
                }
                ChangeStreamCursor stream = core.awaitable(request.database(), request.body());
                long millis = AwaitData.millis(request.body());
                if (stream != null && core.failPoints.starves(appName, stream.scope())) {
                    hold(ctx, msg, 0, millis, () -> answerStarved(ctx, msg, request, stream));
                    return;
                }
                long generation = holdGeneration + 1;
                // await() is false, and nothing is registered, when the cursor has something to return.
                if (stream != null && core.awaitData.await(stream,
                        () -> ctx.executor().execute(() -> release(ctx, generation)))) {
                    // Starved also when the fail point went on while it waited: from that moment
                    // on the stream reads nothing, as a stream answered by another's cursor.
                    hold(ctx, msg, stream.getId(), millis, () -> {
                        if (core.failPoints.starves(appName, stream.scope())) {
                            answerStarved(ctx, msg, request, stream);
                        } else {
                            ctx.fireChannelRead(msg);
                        }
                    });
                    return;
                }
            }
            addToReply = core.failPoints.writeConcernError(appName, request);
            ctx.fireChannelRead(msg);
        }

        /** A starved getMore: an empty batch whose resume token is now, unless its cursor is gone. */
        private void answerStarved(ChannelHandlerContext ctx, Object msg, Request request, ChangeStreamCursor stream) {
            Document batch = core.starvedBatch(request.database(), request.body(), stream);
            if (batch == null) {
                ctx.fireChannelRead(msg); // the library answers CursorNotFound
            } else {
                reply(ctx, msg, batch);
            }
        }

        /** Holds `msg` (and what arrives behind it) until release: a wake-up, or `millis`. */
        private void hold(ChannelHandlerContext ctx, Object msg, long cursor, long millis, Runnable serve) {
            long generation = ++holdGeneration;
            held = msg;
            serveHeld = serve;
            heldCursor = cursor;
            heldTimeout = ctx.executor().schedule(() -> release(ctx, generation), millis, TimeUnit.MILLISECONDS);
        }

        /** Serves the held request (woken or timed out), then whatever queued behind it. */
        private void release(ChannelHandlerContext ctx, long generation) {
            if (held == null || generation != holdGeneration) {
                return;
            }
            heldTimeout.cancel(false);
            if (heldCursor != 0) {
                core.awaitData.cancel(heldCursor);
            }
            Runnable serve = serveHeld;
            held = null;
            serveHeld = null;
            heldCursor = 0;
            serve.run();
            while (held == null && !behind.isEmpty() && ctx.channel().isActive()) {
                dispatch(ctx, behind.poll());
            }
        }

        /** Answers `request` with `document` ourselves (the library never sees it). */
        private void reply(ChannelHandlerContext ctx, Object request, Document document) {
            if (request instanceof MongoMessage message) {
                ctx.channel().writeAndFlush(new MongoMessage(ctx.channel(), new MessageHeader(
                        REPLY_IDS.incrementAndGet(), message.getHeader().getRequestID()), document));
            } else if (request instanceof MongoQuery query) {
                ctx.channel().writeAndFlush(new MongoReply(new MessageHeader(
                        REPLY_IDS.incrementAndGet(), query.getHeader().getRequestID()), document));
            }
        }

        @Override
        public void channelInactive(ChannelHandlerContext ctx) throws Exception {
            if (held != null) {
                heldTimeout.cancel(false);
                if (heldCursor != 0) {
                    core.awaitData.cancel(heldCursor);
                }
                held = null;
                serveHeld = null;
            }
            behind.clear();
            super.channelInactive(ctx);
        }

        @Override
        public void write(ChannelHandlerContext ctx, Object msg, ChannelPromise promise) throws Exception {
            boolean hello = serving.equals("hello") || serving.equals("ismaster");
            if (msg instanceof MongoMessage reply) {
                if (addToReply != null) {
                    addToReply.forEach((key, value) -> reply.getDocument().putIfAbsent(key, value));
                    addToReply = null;
                }
                BsonTimestamp time = core.oplog.operationTime();
                if (hello) {
                    replicaSet.describe(reply.getDocument(), time);
                }
                reply.getDocument()
                        .append("operationTime", time)
                        .append("$clusterTime", new Document("clusterTime", time)
                                .append("signature", new Document("hash", new de.bwaldvogel.mongo.bson.BinData(new byte[20]))
                                        .append("keyId", 0L)));
            } else if (msg instanceof MongoReply reply && hello && !reply.getDocuments().isEmpty()) {
                replicaSet.describe(reply.getDocuments().get(0), core.oplog.operationTime());
            }
            super.write(ctx, msg, promise);
        }
    }

    /**
     * What hello says about the topology. With a set name the server describes itself as the
     * primary of a one-member replica set, as `rs.initiate()` on one mongod does; without one it
     * stays a standalone (the library's own reply). No topologyVersion: drivers that see one
     * switch to streaming monitoring (hello with the exhaustAllowed flag), which the library's
     * wire decoder refuses, closing the connection.
     */
    record ReplicaSet(String name, String me) {
        void describe(Document hello, BsonTimestamp time) {
            if (name.isEmpty() || !Utils.isTrue(hello.get("ok"))) {
                return;
            }
            hello.append("setName", name)
                    .append("setVersion", 1)
                    .append("hosts", List.of(me))
                    .append("primary", me)
                    .append("me", me)
                    .append("secondary", false)
                    .append("electionId", new de.bwaldvogel.mongo.bson.ObjectId("7fffffff0000000000000001"))
                    .append("lastWrite", new Document("opTime", new Document("ts", time).append("t", 1L))
                            .append("lastWriteDate", Instant.ofEpochSecond(time.getTime()))
                            .append("majorityOpTime", new Document("ts", time).append("t", 1L))
                            .append("majorityWriteDate", Instant.ofEpochSecond(time.getTime())));
        }
    }

    /**
     * The network side: the library's MongoServer wiring (same codec and handlers, same netty
     * options), with StackWireHandler in front of the command handler, which MongoServer has no
     * hook for.
     */
    static final class StackServer {
        private final AbstractMongoBackend backend;
        private final StackCore core;
        private EventLoopGroup bossGroup;
        private EventLoopGroup workerGroup;
        private ChannelGroup channels;
        private Channel listener;

        StackServer(AbstractMongoBackend backend, StackCore core) {
            this.backend = backend;
            this.core = core;
        }

        void bind(String host, int port, String replicaSetName) {
            bossGroup = new NioEventLoopGroup(0, new de.bwaldvogel.mongo.MongoThreadFactory("mongo-server-boss"));
            workerGroup = new NioEventLoopGroup(0, new de.bwaldvogel.mongo.MongoThreadFactory("mongo-server-worker"));
            channels = new DefaultChannelGroup("mongodb-channels", workerGroup.next());
            ReplicaSet replicaSet = new ReplicaSet(replicaSetName, host + ":" + port);
            listener = new ServerBootstrap()
                    .group(bossGroup, workerGroup)
                    .channel(NioServerSocketChannel.class)
                    .option(ChannelOption.SO_BACKLOG, 100)
                    .localAddress(new java.net.InetSocketAddress(host, port))
                    .childOption(ChannelOption.TCP_NODELAY, Boolean.TRUE)
                    .childHandler(new ChannelInitializer<SocketChannel>() {
                        @Override
                        protected void initChannel(SocketChannel channel) {
                            channel.pipeline().addLast(new MongoWireReplyEncoder());
                            channel.pipeline().addLast(new MongoWireMessageEncoder());
                            channel.pipeline().addLast(new MongoWireProtocolHandler());
                            channel.pipeline().addLast(new StackWireHandler(core, replicaSet));
                            channel.pipeline().addLast(new MongoDatabaseHandler(backend, channels));
                            channel.pipeline().addLast(new MongoExceptionHandler());
                        }
                    })
                    .bind()
                    .syncUninterruptibly()
                    .channel();
        }

        /** Stops listening, closes every connection (ending waiting getMores), closes the backend. */
        void shutdown() {
            if (listener != null) {
                listener.close().syncUninterruptibly();
            }
            if (channels != null) {
                channels.close().syncUninterruptibly();
            }
            if (workerGroup != null) {
                workerGroup.shutdownGracefully(0, 5, TimeUnit.SECONDS).syncUninterruptibly();
                bossGroup.shutdownGracefully(0, 5, TimeUnit.SECONDS).syncUninterruptibly();
            }
            backend.close();
        }
    }

    static final class ErrorCodes {
        static final int ILLEGAL_OPERATION = 20;
        static final int INVALID_OPTIONS = 72;
        static final int INVALID_RESUME_TOKEN = 260;
        static final int CHANGE_STREAM_FATAL = 280;
        static final int CHANGE_STREAM_HISTORY_LOST = 286;
        static final int BAD_VALUE = 2;
        static final int TYPE_MISMATCH = 14;
        static final int NAMESPACE_NOT_FOUND = 26;
        static final int NO_MATCHING_DOCUMENT = 47;
        static final int ONE_RESUME_OPTION = 40674;
        static final int IDL_MISSING_FIELD = 40414;
        static final int IDL_UNKNOWN_FIELD = 40415;
    }

    /**
     * The collection option changeStreamPreAndPostImages: {enabled: <bool>} of create and collMod,
     * parsed like MongoDB's IDL struct ChangeStreamPreAndPostImagesOptions (strict: an unknown
     * field, a missing `enabled` or a wrong type fails with the IDL parser's codes and messages).
     */
    static final class ImagesOption {
        static final String FIELD = "changeStreamPreAndPostImages";

        /** null when absent, else whether images are enabled. */
        static Boolean parse(String command, Object value) {
            if (value == null) {
                return null;
            }
            String path = command + "." + FIELD;
            if (!(value instanceof Document)) {
                throw wrongType(path, value, "object");
            }
            Document option = (Document) value;
            for (String key : option.keySet()) {
                if (!key.equals("enabled")) {
                    throw new MongoServerError(ErrorCodes.IDL_UNKNOWN_FIELD, "Location40415",
                            "BSON field '" + path + "." + key + "' is an unknown field.");
                }
            }
            if (!option.containsKey("enabled")) {
                throw new MongoServerError(ErrorCodes.IDL_MISSING_FIELD, "Location40414",
                        "BSON field '" + path + ".enabled' is missing but a required field");
            }
            Object enabled = option.get("enabled");
            if (!(enabled instanceof Boolean)) {
                throw wrongType(path + ".enabled", enabled, "bool");
            }
            return (Boolean) enabled;
        }

        /**
         * MongoDB (collection_options.cpp, validateChangeStreamPreAndPostImagesOptionIsPermitted):
         * not on the admin, local or config database.
         */
        static void checkPermitted(String database, Boolean enabled) {
            if (Boolean.TRUE.equals(enabled) && StackOplog.isInternalDatabase(database)) {
                throw new MongoServerError(ErrorCodes.INVALID_OPTIONS, "InvalidOptions",
                        FIELD + " collection option is not supported on the " + database + " database");
            }
        }

        private static MongoServerError wrongType(String path, Object value, String expected) {
            return new MongoServerError(ErrorCodes.TYPE_MISMATCH, "TypeMismatch",
                    "BSON field '" + path + "' is the wrong type '" + bsonTypeName(value) + "', expected type '"
                            + expected + "'");
        }

        private static String bsonTypeName(Object value) {
            if (value == null) {
                return "null";
            } else if (value instanceof Boolean) {
                return "bool";
            } else if (value instanceof Integer) {
                return "int";
            } else if (value instanceof Long) {
                return "long";
            } else if (value instanceof Double) {
                return "double";
            } else if (value instanceof String) {
                return "string";
            } else if (value instanceof List) {
                return "array";
            } else if (value instanceof Document) {
                return "object";
            }
            return value.getClass().getSimpleName();
        }
    }

    /** An update spec without operators replaces the whole document. */
    static boolean isReplacement(Document update) {
        for (String key : update.keySet()) {
            if (key.startsWith("$")) {
                return false;
            }
        }
        return true;
    }

    /** A namespace; the database name ends at the first dot, the collection name may hold more. */
    static final class Ns {
        final String database;
        final String collection;

        Ns(String database, String collection) {
            this.database = database;
            this.collection = collection;
        }

        static Ns parse(String fullName) {
            int dot = fullName.indexOf('.');
            if (dot < 0) {
                return new Ns(fullName, null);
            }
            return new Ns(fullName.substring(0, dot), fullName.substring(dot + 1));
        }

        @Override
        public String toString() {
            return collection == null ? database : database + "." + collection;
        }
    }

    /** Per-thread state of the write command being run (writes are serialized by StackCore). */
    static final class WriteContext {
        boolean bufferInserts;
        Ns insertNs;
        List<Document> inserted = List.of();
        private final Map<String, Map<Object, Document>> images = new HashMap<>();

        Map<Object, Document> images(Ns ns) {
            return images.computeIfAbsent(ns.toString(), k -> new HashMap<>());
        }

        void rememberIfAbsent(Ns ns, Object id, Document image) {
            images(ns).putIfAbsent(id, image);
        }

        void remember(Ns ns, Object id, Document image) {
            images(ns).put(id, image);
        }
    }

    // ---------------------------------------------------------------------------------------
    // The oplog
    // ---------------------------------------------------------------------------------------

    /**
     * Our oplog: an MVMap from a sequence number (1, 2, 3, ... without gaps) to an entry document:
     * {ts: clusterTime, wall: wallTime, op, db, coll, id, doc (insert/replace), upd (update), to
     * (rename), pre, post}. The sequence number is the read position: a cursor reads
     * `get(position + 1)` onwards, so getMore never rescans. In the H2 file it survives restarts
     * with the data.
     *
     * Pre- and post-images (MongoDB 6.0's changeStreamPreAndPostImages): a second map holds the
     * collections that have the option. An entry gets `pre` (the document before an update,
     * replace or delete) and, for an update, `post` (the document right after it) only if its
     * collection had the option when the write ran, which is when MongoDB records a pre-image
     * (and computes the post-image from it): "Pre- and post-images are not available for a change
     * stream event if the images were not enabled on the collection at the time of a document
     * update or delete operation" (manual, "Change Streams with Document Pre- and Post-Images").
     * So images are never made up later, enabling the option does not give earlier events images,
     * and disabling it does not take them from events written while it was on. Images are never
     * removed (no expireAfterSeconds), like the oplog itself.
     */
    static final class StackOplog implements Oplog {
        /** No dot, so H2Database.drop(), which removes maps named "<db>." + ..., never matches it. */
        private static final String MAP_NAME = "stackOplogEntries";
        /** "<db>.<collection>" -> {changeStreamPreAndPostImages: {enabled: true}}; no dot either. */
        private static final String OPTIONS_MAP_NAME = "stackCollectionOptions";

        private final StackBackend backend;
        private final Clock clock;
        private final MVMap<Long, Document> entries;
        private final MVMap<String, Document> options;
        private volatile long lastSeq;
        private BsonTimestamp lastTs; // guarded by this
        private final ThreadLocal<WriteContext> writeContext = new ThreadLocal<>();

        /** Told of every entry once readers can read it (wakes waiting getMores). */
        private final java.util.function.Consumer<Document> written;
        private BsonTimestamp lastReported = new BsonTimestamp(0); // guarded by this

        StackOplog(StackBackend backend, MVStore store, java.util.function.Consumer<Document> written) {
            this.backend = backend;
            this.written = written;
            this.clock = backend.getClock();
            this.entries = store.openMap(MAP_NAME);
            // Same MVStore as the oplog (and with H2 the data): the option survives a restart.
            this.options = store.openMap(OPTIONS_MAP_NAME);
            Long last = entries.lastKey();
            lastSeq = last == null ? 0 : last;
            lastTs = last == null ? new BsonTimestamp(0) : timestampOf(entries.get(last));
            System.out.println("stack oplog: " + lastSeq + " entries"
                    + (last == null ? "" : ", last clusterTime " + lastTs.getTime() + "." + lastTs.getInc()));
        }

        static boolean isInternalDatabase(String database) {
            return database.equals("admin") || database.equals("local") || database.equals("config");
        }

        /** MongoDB's change streams never show these namespaces. */
        private static boolean isHidden(Ns ns) {
            return isInternalDatabase(ns.database) || ns.collection == null || ns.collection.startsWith("system.");
        }

        static BsonTimestamp timestampOf(Document entry) {
            return (BsonTimestamp) entry.get("ts");
        }

        long lastSeq() {
            return lastSeq;
        }

        Document entry(long seq) {
            return seq <= 0 ? null : entries.get(seq);
        }

        /**
         * A time no entry has yet and every later entry will be at or after; never less than one
         * reported before (replies carry it as operationTime, which must not go backwards).
         */
        synchronized BsonTimestamp operationTime() {
            long now = clock.instant().getEpochSecond();
            BsonTimestamp time = now > lastTs.getTime()
                    ? new BsonTimestamp(Instant.ofEpochSecond(now), 0)
                    : new BsonTimestamp(Instant.ofEpochSecond(lastTs.getTime()), lastTs.getInc() + 1);
            if (time.compareTo(lastReported) < 0) {
                time = lastReported;
            }
            lastReported = time;
            return time;
        }

        private synchronized void append(String op, Ns ns, Document fields) {
            long now = clock.instant().getEpochSecond();
            // Strictly increasing even if the wall clock steps back (or after a restart).
            BsonTimestamp ts = now > lastTs.getTime()
                    ? new BsonTimestamp(Instant.ofEpochSecond(now), 1)
                    : new BsonTimestamp(Instant.ofEpochSecond(lastTs.getTime()), lastTs.getInc() + 1);
            Document entry = new Document("ts", ts)
                    .append("wall", Instant.ofEpochMilli(clock.millis()))
                    .append("op", op)
                    .append("db", ns.database)
                    .append("coll", ns.collection);
            entry.putAll(fields);
            long seq = lastSeq + 1;
            entries.put(seq, entry);
            lastTs = ts;
            lastSeq = seq; // published last: readers only read up to lastSeq
            written.accept(entry);
        }

        void logInsert(Ns ns, Document document) {
            append("insert", ns, new Document("id", document.get("_id")).append("doc", document.cloneDeeply()));
        }

        /** `before` may be null (unknown: no pre-image then); `after` is the post-image. */
        void logUpdate(Ns ns, Object id, Document updateDescription, Document before, Document after) {
            Document fields = new Document("id", id).append("upd", updateDescription);
            if (imagesEnabled(ns)) {
                putImage(fields, "pre", before);
                putImage(fields, "post", after);
            }
            append("update", ns, fields);
        }

        void logReplace(Ns ns, Document document, Document before) {
            Document fields = new Document("id", document.get("_id")).append("doc", document.cloneDeeply());
            if (imagesEnabled(ns)) {
                putImage(fields, "pre", before);
            }
            append("replace", ns, fields);
        }

        void logDelete(Ns ns, Object id, Document before) {
            Document fields = new Document("id", id);
            if (imagesEnabled(ns)) {
                putImage(fields, "pre", before);
            }
            append("delete", ns, fields);
        }

        private static void putImage(Document fields, String name, Document image) {
            if (image != null) {
                fields.append(name, image.cloneDeeply());
            }
        }

        // --- the collection option changeStreamPreAndPostImages ---

        boolean imagesEnabled(Ns ns) {
            return ns.collection != null && options.containsKey(ns.toString());
        }

        void setImagesEnabled(Ns ns, boolean enabled) {
            if (enabled) {
                options.put(ns.toString(), new Document(ImagesOption.FIELD, new Document("enabled", true)));
            } else {
                options.remove(ns.toString());
            }
        }

        /** A renamed collection keeps its options; the target's old ones went with its drop. */
        void moveOptions(Ns from, Ns to) {
            Document moved = options.remove(from.toString());
            if (moved != null) {
                options.put(to.toString(), moved);
            } else {
                options.remove(to.toString());
            }
        }

        /** Forgets the options of every collection of a dropped database. */
        void dropOptions(String database) {
            String prefix = database + ".";
            List<String> gone = new ArrayList<>();
            for (String key : options.keySet()) {
                if (key.startsWith(prefix)) {
                    gone.add(key);
                }
            }
            for (String key : gone) {
                options.remove(key);
            }
        }

        void logDropDatabase(String database) {
            append("dropDatabase", new Ns(database, null), new Document());
        }

        void logRename(Ns from, Ns to) {
            if (!isHidden(from)) {
                append("rename", from, new Document("to", new Document("db", to.database).append("coll", to.collection)));
            }
        }

        WriteContext beginWrite() {
            WriteContext context = new WriteContext();
            writeContext.set(context);
            return context;
        }

        void endWrite() {
            writeContext.remove();
        }

        /** The current document by _id, through the collection's _id index (no scan), or null. */
        Document findById(Ns ns, Object id) {
            if (!backend.hasDatabase(ns.database)) {
                return null;
            }
            MongoCollection<?> collection = backend.resolveDatabase(ns.database).resolveCollection(ns.collection, false);
            if (collection == null) {
                return null;
            }
            Document query = new Document("query", new Document("_id", id));
            for (Document document : collection.handleQuery(new QueryParameters(query, 0, 1))) {
                return document.cloneDeeply();
            }
            return null;
        }

        // --- the library's Oplog interface: called from inside its write paths ---

        @Override
        public void handleInsert(String namespace, List<Document> documents) {
            Ns ns = Ns.parse(namespace);
            if (isHidden(ns)) {
                return;
            }
            WriteContext context = writeContext.get();
            if (context != null && context.bufferInserts) {
                // StackCore.insert logs them once it knows which ones failed
                context.insertNs = ns;
                List<Document> copies = new ArrayList<>();
                for (Document document : documents) {
                    copies.add(document.cloneDeeply());
                }
                context.inserted = copies;
                return;
            }
            for (Document document : documents) {
                logInsert(ns, document);
            }
        }

        @Override
        public void handleUpdate(String namespace, Document selector, Document update, List<Object> modifiedIds) {
            Ns ns = Ns.parse(namespace);
            if (isHidden(ns)) {
                return;
            }
            WriteContext context = writeContext.get();
            for (Object id : modifiedIds) {
                Document after = findById(ns, id);
                if (after == null) {
                    continue;
                }
                Document before = context == null ? null : context.images(ns).get(id);
                if (isReplacement(update)) {
                    logReplace(ns, after, before);
                } else {
                    logUpdate(ns, id, UpdateDescriptions.describe(update, before, after), before, after);
                }
                if (context != null) {
                    // the pre-image of a later statement of the same command
                    context.remember(ns, id, after);
                }
            }
        }

        @Override
        public void handleDelete(String namespace, Document query, List<Object> deletedIds) {
            Ns ns = Ns.parse(namespace);
            if (isHidden(ns)) {
                return;
            }
            WriteContext context = writeContext.get();
            for (Object id : deletedIds) {
                logDelete(ns, id, context == null ? null : context.images(ns).get(id));
            }
        }

        @Override
        public void handleDropCollection(String namespace) {
            Ns ns = Ns.parse(namespace);
            if (ns.collection != null) {
                options.remove(ns.toString()); // a re-created collection starts without options
            }
            if (!isHidden(ns)) {
                append("drop", ns, new Document());
            }
        }

        /** Only reached if something bypasses StackCore: a collection-level stream. */
        @Override
        public Cursor createCursor(Document changeStreamDocument, String namespace, Aggregation aggregation) {
            Ns ns = Ns.parse(namespace);
            ChangeStreamCursor cursor = openCursor(backend.cursors().generateCursorId(),
                    Scope.collection(ns.database, ns.collection), changeStreamDocument, aggregation);
            backend.cursors().add(cursor);
            return cursor;
        }

        // --- opening a stream ---

        ChangeStreamCursor openCursor(long cursorId, Scope scope, Document spec, Aggregation aggregation) {
            for (String option : spec.keySet()) {
                if (!KNOWN_OPTIONS.contains(option)) {
                    throw new MongoServerError(40415, "Location40415",
                            "BSON field '$changeStream." + option + "' is an unknown field.");
                }
            }
            String fullDocument = stringOption(spec, "fullDocument", "default",
                    Set.of("default", "updateLookup", "whenAvailable", "required"));
            String beforeChange = stringOption(spec, "fullDocumentBeforeChange", "off",
                    Set.of("off", "whenAvailable", "required"));
            // 'required' is not checked here: like MongoDB, a stream fails only when it reaches an
            // event whose image is missing (ChangeStreamCursor.toEvent).
            Object resumeAfter = spec.get("resumeAfter");
            Object startAfter = spec.get("startAfter");
            Object startAt = spec.get("startAtOperationTime");
            int startOptions = (resumeAfter != null ? 1 : 0) + (startAfter != null ? 1 : 0) + (startAt != null ? 1 : 0);
            if (startOptions > 1) {
                throw new MongoServerError(ErrorCodes.ONE_RESUME_OPTION, "Location40674",
                        "Only one type of resume option is allowed, but multiple were found.");
            }

            long position;
            boolean pendingInvalidate = false;
            BsonTimestamp minTs = null;
            if (resumeAfter != null || startAfter != null) {
                Token token = Token.parse(resumeAfter != null ? resumeAfter : startAfter);
                Document entry = checkTokenPosition(token);
                if (token.kind == Token.INVALIDATE) {
                    if (resumeAfter != null) {
                        throw new MongoServerError(ErrorCodes.INVALID_RESUME_TOKEN, "InvalidResumeToken",
                                "Attempting to resume a change stream using 'resumeAfter' is not allowed from an invalidate notification.");
                    }
                    // startAfter an invalidate: a new stream from just after the event that ended the old one
                } else if (token.kind == Token.EVENT) {
                    if (entry == null || scope.classify(entry) == Scope.Kind.SKIP) {
                        throw tokenNotFound(token);
                    }
                    // After a drop event comes the stream's invalidate, also on resume.
                    pendingInvalidate = scope.isTerminal(entry);
                }
                position = token.seq;
            } else if (startAt != null) {
                if (!(startAt instanceof BsonTimestamp)) {
                    throw new MongoServerError(14, "TypeMismatch", "startAtOperationTime must be a timestamp");
                }
                minTs = (BsonTimestamp) startAt;
                position = lastSeqBefore(minTs);
            } else {
                position = lastSeq;
            }
            return new ChangeStreamCursor(cursorId, this, scope, fullDocument, beforeChange, aggregation, position,
                    pendingInvalidate, minTs);
        }

        private static final Set<String> KNOWN_OPTIONS = Set.of("fullDocument", "fullDocumentBeforeChange",
                "resumeAfter", "startAfter", "startAtOperationTime", "allChangesForCluster", "showExpandedEvents",
                "allowToRunOnConfigDB", "allowToRunOnSystemNS");

        private static String stringOption(Document spec, String name, String dflt, Set<String> allowed) {
            Object value = spec.getOrDefault(name, dflt);
            if (!(value instanceof String) || !allowed.contains(value)) {
                throw new MongoServerError(ErrorCodes.BAD_VALUE, "BadValue",
                        "unsupported value for $changeStream." + name + ": " + value);
            }
            return (String) value;
        }

        /** The entry a token points at (null for the position before the first entry). */
        private Document checkTokenPosition(Token token) {
            if (token.seq == 0) {
                if (token.ts.getValue() != 0) {
                    throw tokenNotFound(token);
                }
                return null;
            }
            Document entry = token.seq <= lastSeq ? entry(token.seq) : null;
            // The timestamp must match too: a token from an earlier, since deleted data file
            // must fail like a token MongoDB no longer has, not resume at a random place.
            if (entry == null || !timestampOf(entry).equals(token.ts)) {
                throw tokenNotFound(token);
            }
            return entry;
        }

        private static MongoServerError tokenNotFound(Token token) {
            return new MongoServerError(ErrorCodes.CHANGE_STREAM_FATAL, "ChangeStreamFatalError",
                    "cannot resume stream; the resume token was not found. " + token.toDocument());
        }

        /** The last sequence number whose entry is before `ts` (timestamps grow with seq). */
        private long lastSeqBefore(BsonTimestamp ts) {
            long lo = 0;
            long hi = lastSeq;
            while (lo < hi) {
                long mid = (lo + hi + 1) >>> 1;
                Document entry = entry(mid);
                if (entry != null && timestampOf(entry).compareTo(ts) < 0) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            return lo;
        }
    }

    /**
     * A resume token: {_data: hex}. Like MongoDB's, a hex string starting "82" whose order is the
     * order of events; drivers treat it as opaque. Ours holds the entry's clusterTime, its sequence
     * number and a kind: an event, the invalidate after it, or a high-water mark (a position
     * between events, reported as postBatchResumeToken).
     */
    static final class Token {
        static final int EVENT = 0x00;
        static final int INVALIDATE = 0x01;
        static final int HIGH_WATER_MARK = 0x7F;

        final BsonTimestamp ts;
        final long seq;
        final int kind;

        Token(BsonTimestamp ts, long seq, int kind) {
            this.ts = ts;
            this.seq = seq;
            this.kind = kind;
        }

        Document toDocument() {
            return new Document("_data", String.format("82%016X%016X%02X", ts.getValue(), seq, kind));
        }

        static Token parse(Object value) {
            if (value instanceof Document && ((Document) value).get("_data") instanceof String) {
                String data = (String) ((Document) value).get("_data");
                if (data.length() == 36 && data.startsWith("82")) {
                    try {
                        BsonTimestamp ts = new BsonTimestamp(Long.parseUnsignedLong(data.substring(2, 18), 16));
                        long seq = Long.parseLong(data.substring(18, 34), 16);
                        int kind = Integer.parseInt(data.substring(34), 16);
                        if (kind == EVENT || kind == INVALIDATE || kind == HIGH_WATER_MARK) {
                            return new Token(ts, seq, kind);
                        }
                    } catch (NumberFormatException e) {
                        // reported below
                    }
                }
            }
            throw new MongoServerError(ErrorCodes.INVALID_RESUME_TOKEN, "InvalidResumeToken",
                    "not a resume token of this server: " + value);
        }
    }

    /** What a stream watches: one collection, one database, or the whole deployment. */
    static final class Scope {
        enum Kind {
            /** not for this stream */
            SKIP,
            /** an event */
            EVENT,
            /** an event, after which the stream is invalidated (drop/rename of its collection) */
            EVENT_THEN_INVALIDATE,
            /** no event, only the invalidate (the database of a collection stream was dropped) */
            INVALIDATE
        }

        final String database; // null: cluster
        final String collection; // null: database or cluster

        private Scope(String database, String collection) {
            this.database = database;
            this.collection = collection;
        }

        static Scope cluster() {
            return new Scope(null, null);
        }

        static Scope database(String database) {
            return new Scope(database, null);
        }

        static Scope collection(String database, String collection) {
            return new Scope(database, collection);
        }

        Kind classify(Document entry) {
            String op = (String) entry.get("op");
            if (database == null) {
                return Kind.EVENT; // MongoDB: no invalidate on a cluster-wide stream
            }
            if (!database.equals(entry.get("db"))) {
                return Kind.SKIP;
            }
            if (collection == null) {
                return op.equals("dropDatabase") ? Kind.EVENT_THEN_INVALIDATE : Kind.EVENT;
            }
            if (op.equals("dropDatabase")) {
                return Kind.INVALIDATE;
            }
            if (!collection.equals(entry.get("coll"))) {
                return Kind.SKIP;
            }
            return op.equals("drop") || op.equals("rename") ? Kind.EVENT_THEN_INVALIDATE : Kind.EVENT;
        }

        boolean isTerminal(Document entry) {
            Kind kind = classify(entry);
            return kind == Kind.EVENT_THEN_INVALIDATE || kind == Kind.INVALIDATE;
        }
    }

    /**
     * A change stream's cursor: a position in the oplog (the last sequence number consumed), read
     * forward with `get(seq)`; never a scan from the start. A getMore with nothing to return waits
     * like MongoDB's awaitData, without blocking a thread: StackWireHandler holds it back until a
     * write in the stream's scope or its maxTimeMS (AwaitData).
     */
    static final class ChangeStreamCursor extends AbstractCursor {
        /** Default getMore batch (MongoDB fills 16 MB; our events are small and this bounds a batch). */
        private static final int DEFAULT_BATCH = 1000;
        /** Entries of other namespaces examined per call at most; the PBRT still advances. */
        private static final int MAX_SCAN = 50_000;
        /** Entries hasPending examines at most: it runs before every getMore, on the event loop. */
        private static final int PENDING_SCAN = 1_000;

        private final StackOplog oplog;
        private final Scope scope;
        private final String fullDocument;
        private final String beforeChange;
        private final Aggregation pipeline;
        private final BsonTimestamp minTs;
        private long position;
        private boolean pendingInvalidate;
        private boolean finished;
        private Document resumeToken;

        ChangeStreamCursor(long id, StackOplog oplog, Scope scope, String fullDocument, String beforeChange,
                           Aggregation pipeline, long position, boolean pendingInvalidate, BsonTimestamp minTs) {
            super(id);
            this.oplog = oplog;
            this.scope = scope;
            this.fullDocument = fullDocument;
            this.beforeChange = beforeChange;
            this.pipeline = pipeline;
            this.position = position;
            this.pendingInvalidate = pendingInvalidate;
            this.minTs = minTs;
            this.resumeToken = pendingInvalidate ? eventToken(position) : highWaterMark(position);
        }

        /** true once the invalidate is delivered: the server then closes the cursor (id 0). */
        @Override
        public synchronized boolean isEmpty() {
            return finished;
        }

        synchronized Document postBatchResumeToken() {
            return resumeToken;
        }

        /** A high-water-mark token at the newest oplog entry, past this cursor's position. */
        synchronized Document newestHighWaterMark() {
            return highWaterMark(oplog.lastSeq());
        }

        Scope scope() {
            return scope;
        }

        /**
         * Whether a getMore has something to return now: an event of this stream's scope past its
         * position, a pending invalidate, or more entries of other namespaces than this check
         * looks at (the getMore then scans them and returns an empty batch with a newer resume
         * token, so a stream far behind catches up without waiting). An event a $match stage
         * filters out counts too (the getMore then answers an empty batch: a wait cut short).
         */
        synchronized boolean hasPending() {
            if (finished || pendingInvalidate) {
                return true;
            }
            long last = oplog.lastSeq();
            if (last - position > PENDING_SCAN) {
                return true;
            }
            for (long seq = position + 1; seq <= last; seq++) {
                Document entry = oplog.entry(seq);
                if (entry != null && scope.classify(entry) != Scope.Kind.SKIP
                        && (minTs == null || StackOplog.timestampOf(entry).compareTo(minTs) >= 0)) {
                    return true;
                }
            }
            return false;
        }

        @Override
        public synchronized List<Document> takeDocuments(int numberToReturn) {
            int limit = numberToReturn > 0 ? numberToReturn : DEFAULT_BATCH;
            List<Document> batch = new ArrayList<>();
            long last = oplog.lastSeq();
            int scanned = 0;
            while (!finished && batch.size() < limit) {
                if (pendingInvalidate) {
                    Document entry = oplog.entry(position);
                    Token token = new Token(StackOplog.timestampOf(entry), position, Token.INVALIDATE);
                    Document invalidate = new Document("_id", token.toDocument())
                            .append("operationType", "invalidate")
                            .append("clusterTime", token.ts)
                            .append("wallTime", entry.get("wall"));
                    deliver(batch, invalidate);
                    resumeToken = token.toDocument();
                    finished = true;
                    break;
                }
                if (position >= last || scanned >= MAX_SCAN) {
                    break;
                }
                long seq = position + 1;
                Document entry = oplog.entry(seq);
                position = seq;
                scanned++;
                if (entry == null) {
                    resumeToken = highWaterMark(seq);
                    continue;
                }
                Scope.Kind kind = scope.classify(entry);
                if (kind == Scope.Kind.SKIP || (minTs != null && StackOplog.timestampOf(entry).compareTo(minTs) < 0)) {
                    resumeToken = highWaterMark(seq);
                    continue;
                }
                if (kind == Scope.Kind.INVALIDATE) {
                    pendingInvalidate = true;
                    continue;
                }
                Document event = toEvent(entry, seq);
                resumeToken = (Document) event.get("_id");
                deliver(batch, event);
                if (kind == Scope.Kind.EVENT_THEN_INVALIDATE) {
                    pendingInvalidate = true;
                }
            }
            return batch;
        }

        private void deliver(List<Document> batch, Document event) {
            if (pipeline == null) {
                batch.add(event);
                return;
            }
            Object token = event.get("_id");
            Document result = pipeline.runStagesAsStream(Stream.of(event)).findFirst().orElse(null);
            if (result == null) {
                return; // filtered out by the client's $match
            }
            if (!Objects.equals(result.get("_id"), token)) {
                throw new MongoServerError(ErrorCodes.CHANGE_STREAM_FATAL, "ChangeStreamFatalError",
                        "Encountered an event whose _id field, which contains the resume token, was modified by the pipeline. "
                                + "Modifying the _id field of an event makes it impossible to resume the stream from that point. "
                                + "Only transformations that retain the unmodified _id field are allowed.");
            }
            batch.add(result);
        }

        private Document eventToken(long seq) {
            Document entry = oplog.entry(seq);
            return new Token(entry == null ? new BsonTimestamp(0) : StackOplog.timestampOf(entry), seq, Token.EVENT)
                    .toDocument();
        }

        private Document highWaterMark(long seq) {
            Document entry = oplog.entry(seq);
            return new Token(entry == null ? new BsonTimestamp(0) : StackOplog.timestampOf(entry), seq,
                    Token.HIGH_WATER_MARK).toDocument();
        }

        /** The change event for an entry, shaped as MongoDB 6.0 shapes it (see "Change Events"). */
        private Document toEvent(Document entry, long seq) {
            String op = (String) entry.get("op");
            BsonTimestamp ts = StackOplog.timestampOf(entry);
            Document event = new Document("_id", new Token(ts, seq, Token.EVENT).toDocument())
                    .append("operationType", op)
                    .append("clusterTime", ts)
                    .append("wallTime", entry.get("wall"));
            Document ns = new Document("db", entry.get("db"));
            if (entry.get("coll") != null) {
                ns.append("coll", entry.get("coll"));
            }
            Ns namespace = new Ns((String) entry.get("db"), (String) entry.get("coll"));
            switch (op) {
                case "insert":
                    event.append("fullDocument", ((Document) entry.get("doc")).cloneDeeply())
                            .append("ns", ns)
                            .append("documentKey", new Document("_id", entry.get("id")));
                    break;
                case "replace":
                    event.append("fullDocument", ((Document) entry.get("doc")).cloneDeeply())
                            .append("ns", ns)
                            .append("documentKey", new Document("_id", entry.get("id")));
                    appendBeforeChange(event, entry);
                    break;
                case "update":
                    event.append("ns", ns)
                            .append("documentKey", new Document("_id", entry.get("id")))
                            .append("updateDescription", ((Document) entry.get("upd")).cloneDeeply());
                    // MongoDB runs its pre-image stage before its post-image stage: a missing
                    // required pre-image is reported first.
                    Document preImage = beforeChange.equals("off") ? null : beforeChangeOf(event, entry);
                    if (fullDocument.equals("updateLookup")) {
                        // the document as it is now, or null once it is gone (MongoDB does the same)
                        event.append("fullDocument", oplog.findById(namespace, entry.get("id")));
                    } else if (fullDocument.equals("whenAvailable") || fullDocument.equals("required")) {
                        // the post-image stored with the update, if the collection had
                        // changeStreamPreAndPostImages then
                        Document postImage = (Document) entry.get("post");
                        if (postImage == null && fullDocument.equals("required")) {
                            throw imageNotFound("post", event);
                        }
                        event.append("fullDocument", postImage == null ? null : postImage.cloneDeeply());
                    }
                    if (!beforeChange.equals("off")) {
                        event.append("fullDocumentBeforeChange", preImage);
                    }
                    break;
                case "delete":
                    event.append("ns", ns).append("documentKey", new Document("_id", entry.get("id")));
                    appendBeforeChange(event, entry);
                    break;
                case "rename":
                    event.append("ns", ns).append("to", ((Document) entry.get("to")).cloneDeeply());
                    break;
                default: // drop, dropDatabase
                    event.append("ns", ns);
                    break;
            }
            return event;
        }

        /** fullDocumentBeforeChange of an update, replace or delete event, unless it is "off". */
        private void appendBeforeChange(Document event, Document entry) {
            if (!beforeChange.equals("off")) {
                event.append("fullDocumentBeforeChange", beforeChangeOf(event, entry));
            }
        }

        /**
         * The pre-image stored with the entry (a copy), or null when there is none; fails when
         * fullDocumentBeforeChange is "required" and there is none.
         */
        private Document beforeChangeOf(Document event, Document entry) {
            Document preImage = (Document) entry.get("pre");
            if (preImage == null && beforeChange.equals("required")) {
                throw imageNotFound("pre", event);
            }
            return preImage == null ? null : preImage.cloneDeeply();
        }

        /**
         * MongoDB's error for a required image that is missing: NoMatchingDocument (47), raised
         * while the event is produced (the aggregate or getMore fails, not the opening of the
         * stream). Messages from src/mongo/db/pipeline/document_source_change_stream_add_pre_image.cpp
         * and ..._add_post_image.cpp (7.0, 8.0 and later 6.0 releases; 6.0.0 worded the post-image
         * one "...for all update, delete and replace events..."), followed by the event's
         * operationType, ns and clusterTime (makePreImageNotFoundErrorMsg).
         */
        private static MongoServerError imageNotFound(String which, Document event) {
            String events = which.equals("pre") ? "update, delete and replace events" : "update events";
            Document ns = (Document) event.get("ns");
            BsonTimestamp ts = (BsonTimestamp) event.get("clusterTime");
            String description = "{operationType: \"" + event.get("operationType") + "\", ns: {db: \""
                    + ns.get("db") + "\", coll: \"" + ns.get("coll") + "\"}, clusterTime: Timestamp("
                    + ts.getTime() + ", " + ts.getInc() + ")}";
            return new MongoServerError(ErrorCodes.NO_MATCHING_DOCUMENT, "NoMatchingDocument",
                    "Change stream was configured to require a " + which + "-image for all " + events
                            + ", but the " + which + "-image was not found for event: " + description);
        }
    }

    // ---------------------------------------------------------------------------------------
    // updateDescription
    // ---------------------------------------------------------------------------------------

    /**
     * updateDescription of an operator update, computed like MongoDB 5.0+ logs it (per modified
     * path, from the document before and after): a path whose value did not change is left out;
     * `$unset` of a missing field is left out; appended array elements are reported as
     * "field.<index>" where MongoDB does so (logsAppendedElements); anything else reports the
     * path's whole new value. Without a
     * pre-image (a document matched only after an earlier statement of the same command changed
     * it) every path of the spec is reported. truncatedArrays stays empty: MongoDB fills it only
     * for pipeline-style updates, which the test server does not support.
     */
    static final class UpdateDescriptions {
        private static final Object MISSING = new Object();

        static Document describe(Document update, Document before, Document after) {
            Document updated = new Document();
            List<String> removed = new ArrayList<>();
            for (String operator : update.keySet()) {
                if (!(update.get(operator) instanceof Document)) {
                    continue;
                }
                Document fields = (Document) update.get(operator);
                for (String path : fields.keySet()) {
                    switch (operator) {
                        case "$setOnInsert":
                            break; // no effect on an update
                        case "$unset":
                            noteRemoved(path, before, after, removed);
                            break;
                        case "$rename":
                            noteRemoved(path, before, after, removed);
                            noteUpdated(String.valueOf(fields.get(path)), operator, null, before, after, updated);
                            break;
                        default:
                            noteUpdated(path, operator, fields.get(path), before, after, updated);
                            break;
                    }
                }
            }
            return description(updated, removed);
        }

        /** Top-level difference of two documents (for changes found after the fact). */
        static Document diff(Document before, Document after) {
            Document updated = new Document();
            List<String> removed = new ArrayList<>();
            for (String key : after.keySet()) {
                if (!before.containsKey(key) || !Objects.equals(before.get(key), after.get(key))) {
                    updated.put(key, after.get(key));
                }
            }
            for (String key : before.keySet()) {
                if (!after.containsKey(key)) {
                    removed.add(key);
                }
            }
            return description(updated, removed);
        }

        private static Document description(Document updated, List<String> removed) {
            return new Document("updatedFields", updated)
                    .append("removedFields", removed)
                    .append("truncatedArrays", new ArrayList<>());
        }

        private static void noteRemoved(String path, Document before, Document after, List<String> removed) {
            boolean existed = before == null || valueAt(before, path) != MISSING;
            if (existed && valueAt(after, path) == MISSING && !removed.contains(path)) {
                removed.add(path);
            }
        }

        private static void noteUpdated(String path, String operator, Object argument, Document before,
                                        Document after, Document updated) {
            String concrete = withoutPositional(path);
            Object now = valueAt(after, concrete);
            if (now == MISSING) {
                return;
            }
            if (before != null) {
                Object was = valueAt(before, concrete);
                if (Objects.equals(was, now)) {
                    return; // a no-op for this path: MongoDB logs nothing for it
                }
                if (logsAppendedElements(operator, argument, was) && was instanceof List && now instanceof List
                        && isAppend((List<?>) was, (List<?>) now)) {
                    List<?> list = (List<?>) now;
                    for (int i = ((List<?>) was).size(); i < list.size(); i++) {
                        updated.put(concrete + "." + i, list.get(i));
                    }
                    return;
                }
            }
            updated.put(concrete, now);
        }

        /**
         * MongoDB's rule (update/push_node.cpp, addtoset_node.cpp): $addToSet logs what it appends
         * as "field.<index>"; $push does so only onto a non-empty array and without $sort, $slice
         * or $position; otherwise the whole array is logged.
         */
        private static boolean logsAppendedElements(String operator, Object argument, Object was) {
            if (operator.equals("$addToSet")) {
                return true;
            }
            if (!operator.equals("$push") || !(was instanceof List) || ((List<?>) was).isEmpty()) {
                return false;
            }
            if (argument instanceof Document && ((Document) argument).containsKey("$each")) {
                return ((Document) argument).keySet().equals(Set.of("$each"));
            }
            return true;
        }

        private static boolean isAppend(List<?> was, List<?> now) {
            return now.size() > was.size() && now.subList(0, was.size()).equals(was);
        }

        /** "a.$.b", "a.$[].b", "a.$[x].b" -> "a": the array the positional operator addresses. */
        private static String withoutPositional(String path) {
            String[] parts = path.split("\\.");
            StringBuilder out = new StringBuilder();
            for (String part : parts) {
                if (part.startsWith("$")) {
                    break;
                }
                if (out.length() > 0) {
                    out.append('.');
                }
                out.append(part);
            }
            return out.length() == 0 ? path : out.toString();
        }

        private static Object valueAt(Document document, String path) {
            Object current = document;
            for (String part : path.split("\\.")) {
                if (current instanceof Document) {
                    Document d = (Document) current;
                    if (!d.containsKey(part)) {
                        return MISSING;
                    }
                    current = d.get(part);
                } else if (current instanceof List) {
                    List<?> list = (List<?>) current;
                    int index;
                    try {
                        index = Integer.parseInt(part);
                    } catch (NumberFormatException e) {
                        return MISSING;
                    }
                    if (index < 0 || index >= list.size()) {
                        return MISSING;
                    }
                    current = list.get(index);
                } else {
                    return MISSING;
                }
            }
            return current;
        }
    }

    // ---------------------------------------------------------------------------------------
    // main
    // ---------------------------------------------------------------------------------------

    public static void main(String[] args) throws Exception {
        Map<String, String> opts = parseArgs(args);
        String host = opt(opts, "host", "MONGO_HOST", "127.0.0.1");
        int port = Integer.parseInt(opt(opts, "port", "MONGO_PORT", "27027"));
        Path dataFile = Path.of(opt(opts, "data", "MONGO_DATA_FILE", "mongo-data/mongo.mv.db")).toAbsolutePath();
        String backendKind = opt(opts, "backend", "MONGO_BACKEND", "h2");
        ReportedVersion version = ReportedVersion.parse(opt(opts, "version", "MONGO_REPORTED_VERSION", "6.0"));
        String replicaSet = opt(opts, "replica-set", "MONGO_REPLICA_SET", "");

        AbstractMongoBackend backend = createBackend(backendKind, dataFile);
        backend.version(version);

        backend.enableOplog(); // installs our StackOplog (createOplog); without it no change events
        ((StackBackend) backend).core().failPoints.version = version; // error code 63 changed in 6.1
        StackServer server = new StackServer(backend, ((StackBackend) backend).core());

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("mongo-java-server shutting down");
            try {
                server.shutdown(); // stops listening, closes connections, then backend.close() (H2: closes the MVStore)
            } catch (RuntimeException e) {
                System.err.println("error during shutdown: " + e);
                backend.close();
            }
            System.out.println("mongo-java-server stopped");
            System.out.flush();
            stopped.countDown();
        }, "mongo-shutdown"));

        server.bind(host, port, replicaSet); // synchronous: the socket accepts connections when this returns

        System.out.println("mongo-java-server " + describe(backendKind, dataFile) + ", reports MongoDB "
                + version.toVersionString() + " (wire version " + version.getWireVersion() + "), stack oplog enabled");
        System.out.println("mongo-java-server ready on " + host + ":" + port);
        System.out.flush();

        stopped.await();
    }

    private static String describe(String kind, Path dataFile) {
        return kind.equals("h2") ? "backend h2 (" + dataFile + ")" : "backend " + kind + " (not persisted)";
    }

    private static Map<String, String> parseArgs(String[] args) {
        Map<String, String> opts = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (!a.startsWith("--")) {
                usage("unexpected argument '" + a + "'");
            }
            String key = a.substring(2);
            String value;
            int eq = key.indexOf('=');
            if (eq >= 0) {
                value = key.substring(eq + 1);
                key = key.substring(0, eq);
            } else if (i + 1 < args.length) {
                value = args[++i];
            } else {
                usage("missing value for --" + key);
                return opts;
            }
            if (!List.of("host", "port", "data", "backend", "version", "replica-set").contains(key)) {
                usage("unknown option --" + key);
            }
            opts.put(key, value);
        }
        return opts;
    }

    private static String opt(Map<String, String> opts, String key, String env, String dflt) {
        String v = opts.get(key);
        if (v == null || v.isEmpty()) {
            v = System.getenv(env);
        }
        return v == null || v.isEmpty() ? dflt : v;
    }

    private static void usage(String problem) {
        System.err.println("MongoTestServer: " + problem);
        System.err.println("usage: java -cp <jars> MongoTestServer.java [--host H] [--port P] [--data FILE]"
                + " [--backend h2|memory] [--version 6.0|7.0] [--replica-set NAME]");
        System.exit(2);
    }
}
