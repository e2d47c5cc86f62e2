#!/bin/sh
# The bench's host-native stand-in for fabric-javaenv's build.sh: builds the chaincode in
# /chaincode/input (or its src/) and leaves the jar(s) in /chaincode/output.
# K8SCC_FSROOT prefixes every absolute path so host tests can run this script
# against a scratch tree.
set -eu

root=${K8SCC_FSROOT:-}
input=$root/chaincode/input
output=$root/chaincode/output

# The JVM takes user.home from the password database, not $HOME; an arbitrary
# non-root uid may have no entry, so point Maven and Gradle at $HOME explicitly.
MAVEN_OPTS="${MAVEN_OPTS:-} -Duser.home=$HOME"
GRADLE_USER_HOME=${GRADLE_USER_HOME:-$HOME/.gradle}
export MAVEN_OPTS GRADLE_USER_HOME

# Build in a scratch copy: the input may be read-only, and target/ or build/
# must not leak back into it.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build_gradle() {
    cp -R "$1/." "$work"
    cd "$work"
    if [ -f ./gradlew ]; then
        # Chaincode packages do not keep executable bits.
        chmod +x ./gradlew
        ./gradlew build shadowJar -x test
    else
        gradle build shadowJar -x test
    fi
    cp build/libs/chaincode.jar "$output/"
    touch "$output/.uberjar"
}

build_maven() {
    cp -R "$1/." "$work"
    cd "$work"
    if [ -f ./mvnw ]; then
        chmod +x ./mvnw
        ./mvnw -q -B -Dstyle.color=never compile package -DskipTests -Dmaven.test.skip=true
    else
        mvn -q -B -Dstyle.color=never compile package -DskipTests -Dmaven.test.skip=true
    fi
    cp target/chaincode.jar "$output/"
    touch "$output/.uberjar"
}

for dir in "$input" "$input/src"; do
    if [ -f "$dir/build.gradle" ] || [ -f "$dir/build.gradle.kts" ]; then
        build_gradle "$dir"
        exit 0
    fi
    if [ -f "$dir/pom.xml" ]; then
        build_maven "$dir"
        exit 0
    fi
done

# No build file: the package carries prebuilt jars that start puts on the classpath.
found=
for jar in "$input"/*.jar "$input"/src/*.jar; do
    if [ -f "$jar" ]; then
        cp "$jar" "$output/"
        found=1
    fi
done
if [ -z "$found" ]; then
    echo "build.sh: no build.gradle, build.gradle.kts, pom.xml or *.jar in $input or $input/src" >&2
    exit 1
fi
