package dprelease.test;

import java.io.IOException;
import java.net.URI;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;

/**
 * The local disk under the scheme {@code norename://}, as an object store presents it: rename is
 * not available, except inside the {@code _temporary} directories of Spark's own output
 * committer (which stands for the store's committer, such as S3A's magic committer). A commit
 * protocol that renames a staging directory, a manifest or a table into place fails here.
 */
public class NoRenameFileSystem extends RawLocalFileSystem {
  private static final URI NAME = URI.create("norename:///");

  @Override
  public URI getUri() {
    return NAME;
  }

  @Override
  public String getScheme() {
    return "norename";
  }

  @Override
  public boolean rename(Path src, Path dst) throws IOException {
    if (src.toUri().getPath().contains("/_temporary/")) {
      return super.rename(src, dst);
    }
    throw new IOException("rename is not available on this store: " + src + " -> " + dst);
  }
}
